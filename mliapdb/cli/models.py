"""``mliapdb models``: the model registry and whether each model can run here."""

from __future__ import annotations

import click

from mliapdb.cli.output import emit, format_option


def availability(spec) -> tuple[bool, str]:
    """(ready, why): packages installed (metadata only) and checkpoint present."""
    from mliapdb.compute.models.registry import availability as model_availability

    try:
        return model_availability(spec)
    except Exception as exc:  # unreadable checkpoints file, odd path
        return False, str(exc).splitlines()[0]


@click.command()
@format_option
def models(fmt) -> None:
    """List the registered models, their energy convention and whether they can run here."""
    from mliapdb.compute.models.registry import load_model_specs

    rows = []
    for name, spec in sorted(load_model_specs().items()):
        ready, reason = availability(spec)
        rows.append(
            (name, spec.family, spec.version, spec.training_set, spec.functional,
             spec.energy_convention, "yes" if ready else "no", reason)
        )
    emit(
        ["name", "family", "version", "training_set", "functional", "energy_convention",
         "ready", "why"],
        rows, fmt,
    )
