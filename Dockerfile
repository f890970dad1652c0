# daarion_bridge: slim image, non-root, config and registration on the /data volume.
FROM python:3.11-slim

RUN useradd --system --uid 1337 --home-dir /data --shell /usr/sbin/nologin bridge

WORKDIR /opt/daarion-bridge
COPY pyproject.toml README.md registration.yaml ./
COPY daarion_bridge ./daarion_bridge
RUN pip install --no-cache-dir . && rm -rf /root/.cache
COPY docker-run.sh /usr/local/bin/docker-run.sh

ENV XDG_RUNTIME_DIR=/tmp
VOLUME /data
WORKDIR /data
USER bridge
EXPOSE 29333
ENTRYPOINT ["/usr/local/bin/docker-run.sh"]
