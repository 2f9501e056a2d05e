"""``mliapdb ingest predictions FILE --model NAME --kind KIND``: a Matbench-Discovery-style
predictions table of a known model into the calculations table."""

from __future__ import annotations

from pathlib import Path

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import emit, format_option, status


@click.command("predictions")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--model", required=True,
              help="Model the predictions are of: one of 'mliapdb models', or registered in "
              "the database (ingest relax --as); its energy convention applies.")
@click.option("--kind", required=True,
              type=click.Choice(["relax", "relax-fixsym", "single-point"]),
              help="relax: energies of relaxed structures; relax-fixsym: of relaxations "
              "that kept the DFT space group; single-point: of the DFT structures.")
@click.option("--dataset", default="mp", show_default=True,
              help="Dataset whose materials the ids name (a file with a dataset "
              "column names each row's).")
@click.option("--energy-column", default=None, metavar="COL",
              help="Column of the model's energy (default: energy, e_pred, MODEL_energy, the "
              "one column ending in _energy, or energy_per_atom).")
@click.option("--energy-unit", type=click.Choice(["eV", "eV/atom"]), default=None,
              help="eV per cell, or eV/atom (default: eV/atom for a column named *per_atom*, "
              "else eV per cell).")
@click.option("--structure-column", default=None, metavar="COL",
              help="Column of the relaxed structures, pymatgen Structure dicts (default: "
              "relaxed_structure, MODEL_structure or the one column ending in _structure).")
@format_option
@db_option
@click.pass_context
def predictions(ctx, path, model, kind, dataset, energy_column, energy_unit, structure_column,
                fmt, db_path) -> None:
    """Import a model's predictions (CSV, CSV.gz, JSON records/columns, or Parquet; one row
    per material: material_id, the energy, optionally the relaxed structure).

    Every row is checked first (known material id with an accepted DFT entry, no duplicate,
    a finite energy within the physical range, a structure of the material's atoms); one bad
    row refuses the whole file and leaves the database as it was. The rows are stored in one
    transaction under settings of their own (source file and sha256), never pooled with
    locally computed runs. Importing the same file again changes nothing.
    """
    from mliapdb.cli.ingest import refresh_model_hulls
    from mliapdb.compute.predictions import file_kind, import_predictions
    from mliapdb.store import database as db

    file_kind(path)
    db_file = resolve_db(ctx, db_path)
    con = db.connect(db_file)
    try:
        report = import_predictions(con, path, model, kind, dataset=dataset,
                                    energy_column=energy_column, energy_unit=energy_unit,
                                    structure_column=structure_column)
        if report.n_new:
            refresh_model_hulls(con)
    finally:
        con.close()
    if report.already_from is not None:
        status(f"{db_file}: {path} (sha256 {report.sha256[:12]}...) was imported before from "
               f"{report.already_from}: {report.n_rows} rows of {model}, settings "
               f"{report.settings_hash}, unchanged")
    else:
        status(f"{db_file}: imported {report.n_new} {kind} predictions of {model} from {path} "
               f"(sha256 {report.sha256[:12]}...) as settings {report.settings_hash}")
    emit(["model", "settings", "kind", "rows", "new", "sha256"],
         [(model, report.settings_hash, report.calc_kind, report.n_rows, report.n_new,
           report.sha256)], fmt)
