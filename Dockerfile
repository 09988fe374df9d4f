# One image for every ctloop component of the cluster profile (docker-compose.yml).
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY ctloop ctloop
COPY flows flows
COPY tasks tasks
COPY deployments deployments
COPY deploy deploy
RUN pip install --no-cache-dir -e .
RUN useradd --create-home ctloop && mkdir -p /data && chown ctloop /data
USER ctloop
EXPOSE 8000
CMD ["ctloop", "up", "--profile", "cluster", "-c", "/app/deploy/ctloop.yaml"]
