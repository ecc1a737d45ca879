FROM python:3.11-slim
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
CMD ["python3"]

# --- added by envship ---
LABEL "io.envship.hash"="sha256:c0f9603ef2c62ca93e2cd767d1cde6aa2cfbeb2c4493108f8e198184cfec6e99" \
    "io.envship.inputs"="{\"base\":{\"dockerfile\":\"Dockerfile\"},\"context\":[[\"Dockerfile\",\"file\",\"0c8e76d54217315f3300912aa1dd516f2083f7a72c5a78f8ec3969e46b1aa5ae\"],[\"requirements.txt\",\"file\",\"072f7e8839c8dd7312001f9b00b1eaac84d49553856b42e2526be6508caf4963\"]],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"python\",\"mode\":\"user\"},\"scheme\":\"envship/2\"}" \
    "io.envship.python.interpreter"="python" \
    "io.envship.scheme"="envship/2" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
