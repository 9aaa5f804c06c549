# Nginx with the widget and dashboard files, from the official alpine image (registry source).
# Runs as the image's `nginx` user (uid 101); the rendered nginx.conf listens on 8080/8443 and
# keeps its pid and temp files under /tmp, so no root and no capabilities are needed.
ARG NGINX_IMAGE=nginx:1.27-alpine
FROM ${NGINX_IMAGE}
COPY web/ /usr/share/orbis/web/
RUN chmod -R a+rX /usr/share/orbis/web
USER 101:101
EXPOSE 8080 8443
CMD ["nginx", "-g", "daemon off;"]
