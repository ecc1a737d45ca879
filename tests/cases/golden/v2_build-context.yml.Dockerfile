FROM python:3.11-slim
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m pip install --no-cache-dir -r /tmp/requirements.txt && rm /tmp/requirements.txt
CMD ["python3"]

# --- added by envship ---
LABEL "io.envship.hash"="sha256:66eda08125df44134829af9950734f7c0385c639eac8fe33a4be6f8365124153" \
    "io.envship.inputs"="{\"base\":{\"dockerfile\":\"Dockerfile\"},\"context\":[[\"Dockerfile\",\"file\",\"0c8e76d54217315f3300912aa1dd516f2083f7a72c5a78f8ec3969e46b1aa5ae\"],[\"requirements.txt\",\"file\",\"072f7e8839c8dd7312001f9b00b1eaac84d49553856b42e2526be6508caf4963\"]],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"interpreter\":\"python\",\"mode\":\"user\"},\"scheme\":\"envship/1\"}" \
    "io.envship.python.interpreter"="python" \
    "io.envship.scheme"="envship/1" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
