"""The forms environments are kept in, one module each, tried in this order in every folder.

1. `assets`: an azureml-assets curated environment (`asset.yaml`); the folder is the asset's.
2. `aml_v1`: an Azure ML v1 saved folder (`azureml_environment.json`); the folder is the
   environment's.
3. `others`: YAML that is not an environment (another Azure ML `$schema`, a CI workflow) is
   noted; YAML that does not parse and may be an environment is refused on its own.
4. `aml_v2`: every Azure ML v2 environment YAML, one environment each; it claims its
   `conda_file` and `build.path`.
5. `plain_dockerfile`: a `Dockerfile`; the folder and everything below it is its build context.
6. `plain_conda`: every conda file not claimed, one environment each.
7. `plain_pip`: `requirements.txt`, when the folder has no conda file.

Forms 5-7 are the plain forms: none of them looks inside a v2 `build.path` or in a folder with a
v2 environment. Adding a form is adding a module and its place in `FORMS`.
"""

from __future__ import annotations

from controller.core.model import Kind
from controller.core.specs.aml_v1 import AmlV1
from controller.core.specs.aml_v2 import AmlV2
from controller.core.specs.assets import Assets
from controller.core.specs.base import Form
from controller.core.specs.others import Others
from controller.core.specs.plain_conda import PlainConda
from controller.core.specs.plain_dockerfile import PlainDockerfile
from controller.core.specs.plain_pip import PlainPip

FORMS: tuple[Form, ...] = (
    Assets(),
    AmlV1(),
    Others(),
    AmlV2(),
    PlainDockerfile(),
    PlainConda(),
    PlainPip(),
)
BY_KIND: dict[Kind, Form] = {form.kind: form for form in FORMS}
CLAIMING: tuple[Form, ...] = tuple(form for form in FORMS if isinstance(form, Assets | AmlV2))
"""The forms whose documents claim paths elsewhere (the others' `claims` give nothing)."""
PLAIN_KINDS: frozenset[Kind] = frozenset({"dockerfile", "conda", "pip"})
"""Forms whose environments do not name themselves (their names come from their paths)."""
