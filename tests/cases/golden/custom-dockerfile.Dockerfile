FROM python:3.11-slim
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# --- added by envship ---
LABEL "io.envship.hash"="sha256:9ac73e739b1a8550a8879aa24876d8844ef66c00588a6da6f2fd8daa95f05f01" \
    "io.envship.inputs"="{\"base\":{\"dockerfile\":\"Dockerfile\"},\"context\":[[\"Dockerfile\",\"file\",\"82b44a4c46bf558e81f0b07cd947edc03275abe8f8c5b8e58d2b4c0692e3f52c\"]],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"/opt/venv/bin/python\",\"mode\":\"user\"},\"scheme\":\"envship/1\"}" \
    "io.envship.python.interpreter"="/opt/venv/bin/python" \
    "io.envship.scheme"="envship/1" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
