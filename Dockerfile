# AutoBot served by Hypercorn's Trio workers (see docs/deployment.md).
#   docker build -t autobot .
#   docker run --init -p 8000:8000 -v autobot-data:/var/lib/autobot autobot
# One worker on the embedded store by default; with AUTOBOT_REDIS_URL set,
# HYPERCORN_WORKERS=4 runs four.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY autobot ./autobot
RUN python -m venv /opt/autobot \
    && /opt/autobot/bin/pip install --no-cache-dir .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/autobot --shell /usr/sbin/nologin autobot \
    && mkdir -p /var/lib/autobot \
    && chown autobot:autobot /var/lib/autobot
COPY --from=build /opt/autobot /opt/autobot
ENV PATH=/opt/autobot/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    AUTOBOT_DATA_DIR=/var/lib/autobot \
    AUTOBOT_HOST=0.0.0.0 \
    HYPERCORN_WORKERS=1
USER autobot
WORKDIR /var/lib/autobot
VOLUME /var/lib/autobot
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=2).status != 200)"]
# exec: Hypercorn's master, not a shell, receives docker stop's SIGTERM.
CMD exec hypercorn --worker-class trio --workers "$HYPERCORN_WORKERS" \
    --bind 0.0.0.0:8000 --graceful-timeout 3 autobot.asgi:app
