# FlakeDrop Telemetry server image.
#   docker build -t flakedrop-telemetry .
#   docker run -p 8080:8080 -v flakedrop-data:/data flakedrop-telemetry
# Settings come from flags (CMD) or FLAKEDROP_TELEMETRY_* environment variables. The CMD names no port,
# so a platform's $PORT (Heroku, Render, Fly) applies, and $DATABASE_URL when no store URL is set.

# --- build: turn the package and its dependencies into wheels -------------------------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml setup.cfg README.md ./
COPY exporter ./exporter
# [postgres] adds psycopg, so the same image serves the `replicas` compose profile (--database-url).
RUN pip wheel --wheel-dir /wheels ".[postgres]"

# --- runtime: no compiler, no sources, a non-root user ----------------------------------------------
FROM python:3.11-slim-bookworm
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --user-group --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin flakedrop \
    && mkdir /data \
    && chown 10001:10001 /data
# COPY --from rather than RUN --mount: docker-compose 1.29 builds with the classic builder (no BuildKit).
COPY --from=build /wheels /wheels
RUN pip install --no-index --find-links /wheels "flakedrop-telemetry[postgres]" \
    && rm -rf /wheels
USER 10001:10001
WORKDIR /data
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; port = os.environ.get('FLAKEDROP_TELEMETRY_PORT') or os.environ.get('PORT') or '8080'; urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2)"]
ENTRYPOINT ["flakedrop-telemetry"]
CMD ["serve", "--host", "0.0.0.0", "--data-dir", "/data"]
