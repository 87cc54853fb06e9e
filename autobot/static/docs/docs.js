// Renders the server's own OpenAPI document with the vendored Swagger UI.
// Nothing is fetched from another host: no validator badge, no remote assets.
"use strict";

window.addEventListener("DOMContentLoaded", function () {
  window.ui = SwaggerUIBundle({
    url: "/api/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    layout: "BaseLayout",
    presets: [SwaggerUIBundle.presets.apis],
    showExtensions: true,
    showCommonExtensions: true,
    validatorUrl: null,
    tryItOutEnabled: false,
  });
});
