# Touchpoint's worker and API image: `touchpoint worker` by default, `touchpoint api` in compose.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first (cached while only the code changes), then the code.
COPY pyproject.toml README.md ./
COPY touchpoint ./touchpoint
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py ./
RUN pip install . \
    && groupadd --system --gid 10001 touchpoint \
    && useradd --system --uid 10001 --gid touchpoint --home-dir /app --shell /usr/sbin/nologin touchpoint \
    && mkdir -p /app/data && chown touchpoint:touchpoint /app/data
COPY --chown=touchpoint:touchpoint playbooks ./playbooks

USER touchpoint
ENV TOUCHPOINT_HOME=/app/data
EXPOSE 8000 9464
CMD ["touchpoint", "worker"]
