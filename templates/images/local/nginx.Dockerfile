# Nginx from Debian with the widget and dashboard files (images.source: local), shaped like the
# official image: user `nginx` (uid 101), config in /etc/nginx, logs to the container's output.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
ARG DEBIAN_FRONTEND=noninteractive
RUN groupadd --system --gid 101 nginx \
 && useradd --system --uid 101 --gid nginx --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin nginx \
 && apt-get update \
 && apt-get install -y --no-install-recommends nginx wget \
 && rm -rf /var/lib/apt/lists/* /etc/nginx/sites-enabled /etc/nginx/conf.d/* \
 && ln -sf /dev/stdout /var/log/nginx/access.log \
 && ln -sf /dev/stderr /var/log/nginx/error.log
COPY web/ /usr/share/orbis/web/
RUN chmod -R a+rX /usr/share/orbis/web
USER 101:101
EXPOSE 8080 8443
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
