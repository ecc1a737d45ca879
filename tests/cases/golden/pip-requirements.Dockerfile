# rendered by envship (envship/2)
FROM mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1
COPY azureml-environment-setup/mutated_conda_dependencies.yml /azureml-environment-setup/mutated_conda_dependencies.yml
RUN --mount=type=cache,id=envship-conda-pkgs,target=/var/cache/envship/conda-pkgs,sharing=locked \
    --mount=type=cache,id=envship-pip,target=/var/cache/envship/pip \
    --mount=type=secret,id=envship-pip-conf,target=/run/secrets/envship-pip-conf \
    export CONDA_PKGS_DIRS=/var/cache/envship/conda-pkgs PIP_CACHE_DIR=/var/cache/envship/pip \
 && if [ -f /run/secrets/envship-pip-conf ]; then export PIP_CONFIG_FILE=/run/secrets/envship-pip-conf; fi \
 && conda env create -p /azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868 -f /azureml-environment-setup/mutated_conda_dependencies.yml \
 && CONDA_ROOT_DIR="$(conda info --root)" \
 && rm -rf "$CONDA_ROOT_DIR/pkgs" \
 && find "$CONDA_ROOT_DIR" -type d -name __pycache__ -exec rm -rf {} +
ENV PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868/bin:$PATH
ENV AZUREML_CONDA_ENVIRONMENT_PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868
ENV LD_LIBRARY_PATH=/azureml-envs/azureml_c3cbaa0534ff81114e2f52f608841868/lib:$LD_LIBRARY_PATH
ENV AZUREML_ENVIRONMENT_IMAGE=True
LABEL "io.envship.hash"="sha256:7e18a2a1472c20e60742b111c7c8518f9faf4f9c642ed7530aa8ea5fde594eb2" \
    "io.envship.inputs"="{\"base\":{\"image\":\"mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04:20251130.v1\"},\"context\":[],\"environment\":{},\"platform\":\"linux/amd64\",\"python\":{\"conda\":{\"channels\":[\"anaconda\",\"conda-forge\"],\"dependencies\":[\"pip\",\"python=3.8.13\"],\"pip\":[\"mlflow-skinny==2.17.2\",\"pandas<2.3,>=2.2\",\"scikit-learn==1.5.2\"],\"variables\":{}},\"mode\":\"conda\"},\"scheme\":\"envship/2\"}" \
    "io.envship.scheme"="envship/2" \
    "org.opencontainers.image.revision"="abc" \
    "org.opencontainers.image.source"="https://example.org/repo"
CMD ["bash"]
