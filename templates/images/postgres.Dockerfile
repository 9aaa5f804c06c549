# The official PostgreSQL 15 (alpine) of the registry source, with pgBackRest added for
# continuous archiving (issue 16); everything else is the upstream image as it is.
ARG POSTGRES_IMAGE=postgres:15.10-alpine
FROM ${POSTGRES_IMAGE}
RUN apk add --no-cache pgbackrest \
 && pgbackrest version
