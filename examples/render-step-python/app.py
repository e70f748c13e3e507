"""A Dray promotion step written in Python: `render-template`.

It renders a service's manifest from a template in the work directory with the values a
Stage needs: the Stage's own (passed in `values`, usually `${{ vars.x }}` expressions), the
image the Freight carries, and the commit that image was built from (its
`org.opencontainers.image.revision` annotation). Fixed steps cannot do that in one go; this is
the step the person Dray is for could not write for Kargo.

Built into a WebAssembly component with componentize-py (see README.md) and run by Dray in the
same sandbox as its built-in steps: the work directory is its whole file system.
"""

import json
import os
import string

import wit_world
from componentize_py_types import Err
from wit_world.imports import log, types

SCHEMA = {
    "type": "object",
    "required": ["output"],
    "additionalProperties": False,
    "oneOf": [{"required": ["template"]}, {"required": ["inline"]}],
    "properties": {
        "template": {"type": "string", "description": "template file, $name placeholders"},
        "inline": {"type": "string", "description": "the template itself, instead of a file"},
        "output": {"type": "string", "description": "where the rendered file goes"},
        "values": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}},
    },
}

REVISION = "org.opencontainers.image.revision"


def inside(path: str) -> str:
    # The work directory is the guest's `/`; the host refuses anything outside it anyway.
    return "/" + path.lstrip("/")


def freight_values(context: types.StepContext) -> dict:
    values = {"project": context.project, "stage": context.stage}
    if context.freight:
        target = context.freight[0]
        values["freight"] = target.alias or target.name
        if target.images:
            image = target.images[0]
            values["image"] = image.repo_url
            values["tag"] = image.tag or ""
            values["digest"] = image.digest or ""
            values["commit"] = dict(image.annotations).get(REVISION, "")
        if target.commits:
            values.setdefault("commit", target.commits[0].id)
    return values


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return [
            types.StepKind(
                name="render-template",
                description="Renders a template with the Stage's values, the Freight's image and its commit",
                config_schema=json.dumps(SCHEMA),
                capabilities=[],
            )
        ]

    def run(self, kind, context, config):
        if kind != "render-template":
            raise Err(types.StepError_InvalidConfig(f"unknown step kind {kind!r}"))
        config = json.loads(config)
        values = freight_values(context)
        values.update({k: str(v) for k, v in config.get("values", {}).items()})
        if "inline" in config:
            template = string.Template(config["inline"])
        else:
            try:
                with open(inside(config["template"])) as f:
                    template = string.Template(f.read())
            except OSError as e:
                raise Err(types.StepError_InvalidConfig(f"cannot read the template {config['template']}: {e}"))
        try:
            rendered = template.substitute(values)
        except KeyError as e:
            known = ", ".join(sorted(values))
            raise Err(types.StepError_Terminal(f"the template names ${e.args[0]}, which has no value (known: {known})"))
        output = inside(config["output"])
        try:
            os.makedirs(os.path.dirname(output) or "/", exist_ok=True)
            with open(output, "w") as f:
                f.write(rendered)
        except OSError as e:
            raise Err(types.StepError_Retryable(f"cannot write {config['output']}: {e}"))
        log.write(log.Level.INFO, f"rendered {config['output']}", [("bytes", str(len(rendered)))])
        return types.StepResult(
            status=types.Status.SUCCEEDED,
            outputs=json.dumps({"path": config["output"], "rendered": rendered[:4096]}),
            message=f"rendered {config['output']} ({len(rendered)} bytes)",
            retry_after_seconds=None,
        )
