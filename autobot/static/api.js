// Talking to the AutoBot API: JSON over fetch, WebSocket URLs, the bearer token.
//
// When the server answers 401, the page asks for the token (once, however many
// requests were refused at the same moment), keeps it in sessionStorage for
// this tab, and repeats the request with "Authorization: Bearer <token>".
// Browsers cannot set headers on a WebSocket, so WebSocket URLs carry the
// token as the `token` query parameter instead (the contract allows both).

const TOKEN_KEY = "autobot.token";

let askUser = null;
let pendingPrompt = null;

/** An error answer from the API (or the network), in the contract's shape. */
export class ApiError extends Error {
  constructor(status, error) {
    super(error?.message || `the server answered ${status}`);
    this.status = status;
    this.code = error?.code || "http_error";
    this.scope = error?.scope;
    this.deadlineS = error?.deadline_s;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

/** `ask(rejected)` shows the prompt and resolves to the token the user typed. */
export function setTokenPrompt(ask) {
  askUser = ask;
}

async function needToken() {
  if (!pendingPrompt) {
    const rejected = token() !== null;
    pendingPrompt = (async () => {
      const typed = await askUser(rejected);
      sessionStorage.setItem(TOKEN_KEY, typed);
    })().finally(() => {
      pendingPrompt = null;
    });
  }
  return pendingPrompt;
}

/** `method path` with an optional JSON body; the parsed answer, or throws ApiError. */
export async function api(method, path, body) {
  for (;;) {
    const headers = { Accept: "application/json" };
    const bearer = token();
    if (bearer) headers.Authorization = `Bearer ${bearer}`;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch {
      throw new ApiError(0, { code: "disconnected", message: "cannot reach the server" });
    }
    if (response.status === 401) {
      await needToken();
      continue;
    }
    let data = null;
    if (response.status !== 204) {
      data = await response.json().catch(() => null);
    }
    if (!response.ok) throw new ApiError(response.status, data?.error);
    return data;
  }
}

/** The ws:// (or wss://) URL of `path` on this server, with the token if there is one. */
export function socketUrl(path) {
  const url = new URL(path, window.location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  const bearer = token();
  if (bearer) url.searchParams.set("token", bearer);
  return url.href;
}

/** A sentence for the error box: what went wrong, and the deadline scope if one expired. */
export function describeError(error) {
  const code = error?.code || "error";
  const message = error?.message || "something went wrong";
  const scope = error?.scope;
  let text;
  if (code === "llm_unavailable") {
    text = `The language model is unavailable: ${message}`;
  } else if (code === "llm_error") {
    text = `The language model answered with an error: ${message}`;
  } else if (scope) {
    const budget = error.deadline_s ?? error.deadlineS;
    const seconds = budget === undefined ? "" : ` after ${budget} s`;
    text = `A deadline expired (scope ${scope}${seconds}): ${message}`;
  } else if (code === "disconnected") {
    text = `Disconnected: ${message}`;
  } else {
    text = message;
  }
  return `${text} [${code}]`;
}

/** Seconds before reconnect attempt `attempt` (0, 1, ...): doubling from 0.5 s to 10 s, jittered. */
export function backoff(attempt) {
  const base = Math.min(10, 0.5 * 2 ** attempt);
  return base / 2 + (Math.random() * base) / 2;
}
