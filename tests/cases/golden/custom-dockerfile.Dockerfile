FROM python:3.11-slim
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# --- added by envship ---
LABEL "io.envship.hash"="sha256:e7f998aec1f44f12914bce988d078ae7a8024e9258a252e6ab7c873623a80669" \
    "io.envship.inputs"="{\"base\":{\"dockerfile\":\"Dockerfile\"},\"context\":[[\"Dockerfile\",\"file\",\"82b44a4c46bf558e81f0b07cd947edc03275abe8f8c5b8e58d2b4c0692e3f52c\"]],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"/opt/venv/bin/python\",\"mode\":\"user\"},\"scheme\":\"envship/2\"}" \
    "io.envship.python.interpreter"="/opt/venv/bin/python" \
    "io.envship.scheme"="envship/2" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
