# Touchpoint's worker and API image: `touchpoint worker` by default, `touchpoint api` in compose.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Dependencies first, from pyproject.toml alone: this layer stays cached while only the code changes.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt
# Then the code, installed without touching the dependencies.
COPY README.md ./
COPY touchpoint ./touchpoint
COPY workflows ./workflows
COPY activities ./activities
COPY worker.py ./
RUN pip install --no-deps . \
    && groupadd --system --gid 10001 touchpoint \
    && useradd --system --uid 10001 --gid touchpoint --home-dir /app --shell /usr/sbin/nologin touchpoint \
    && mkdir -p /app/data && chown touchpoint:touchpoint /app/data
COPY --chown=touchpoint:touchpoint playbooks ./playbooks

USER touchpoint
ENV TOUCHPOINT_HOME=/app/data
EXPOSE 8000 9464
CMD ["touchpoint", "worker"]
