# Redis 7 from Debian, shaped like the official image: user `redis` (uid 999), data in /data,
# `redis-server` as the command (arguments come from the compose file).
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd --system --gid 999 redis \
 && useradd --system --uid 999 --gid redis --home-dir /data --no-create-home redis \
 && apt-get update \
 && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
WORKDIR /data
VOLUME /data
USER 999:999
EXPOSE 6379
CMD ["redis-server"]
