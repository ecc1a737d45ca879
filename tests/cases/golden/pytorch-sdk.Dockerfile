# rendered by envship (envship/1)
FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1
COPY azureml-environment-setup/mutated_conda_dependencies.yml /azureml-environment-setup/mutated_conda_dependencies.yml
RUN conda env create -p /azureml-envs/azureml_8786dc561955761ab00674708a5c3235 -f /azureml-environment-setup/mutated_conda_dependencies.yml \
 && rm -rf "$HOME/.cache/pip" \
 && conda clean -aqy \
 && CONDA_ROOT_DIR="$(conda info --root)" \
 && rm -rf "$CONDA_ROOT_DIR/pkgs" \
 && find "$CONDA_ROOT_DIR" -type d -name __pycache__ -exec rm -rf {} +
ENV PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235/bin:$PATH
ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235
ENV LD_LIBRARY_PATH=/azureml-envs/azureml_8786dc561955761ab00674708a5c3235/lib:$LD_LIBRARY_PATH
ENV AZUREML_ENVIRONMENT_IMAGE=True
ENV EXAMPLE_ENV_VAR="EXAMPLE_VALUE"
LABEL "io.envship.hash"="sha256:9c56d92157309ab6030118b239f135ee925e2759e6e474abf2ce12cbd67edfa1" \
    "io.envship.inputs"="{\"base\":{\"image\":\"mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1\"},\"context\":[],\"environment\":{\"EXAMPLE_ENV_VAR\":\"EXAMPLE_VALUE\"},\"platform\":\"linux/amd64\",\"python\":{\"conda\":{\"channels\":[\"pytorch\",\"anaconda\",\"conda-forge\"],\"dependencies\":[\"python=3.8.13\",\"pytorch\",\"torchvision\"],\"pip\":[\"deepspeed\",\"mpi4py\",\"pyyaml\"],\"variables\":{}},\"mode\":\"conda\"},\"scheme\":\"envship/1\"}" \
    "io.envship.scheme"="envship/1" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
CMD ["bash"]
