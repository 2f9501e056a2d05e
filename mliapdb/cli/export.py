"""``mliapdb export NAME --out FILE``: a table or view, or one model's predictions, to CSV,
JSON or Parquet."""

from __future__ import annotations

from pathlib import Path

import click

from mliapdb.cli.common import db_option, resolve_db
from mliapdb.cli.output import status


@click.command("export")
@click.argument("name", metavar="VIEW")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="Output file: .csv, .csv.gz, .json, .json.gz or .parquet.")
@click.option("--model", default=None, help="export predictions: the model.")
@click.option("--kind", type=click.Choice(["relax", "relax-fixsym", "single-point"]),
              default="relax", show_default=True, help="export predictions: calculation kind.")
@click.option("--dataset", default=None, help="export predictions: only this dataset.")
@click.option("--settings", "settings_hash", default=None, metavar="HASH",
              help="export predictions: only these settings (when a model has several).")
@db_option
@click.pass_context
def export(ctx, name, out, model, kind, dataset, settings_hash, db_path) -> None:
    """Write a table or view of the database (any of its catalog, e.g. ehull_errors), or with
    VIEW 'predictions' one model's usable results in the layout 'ingest predictions' reads
    (material_id, formula, n_atoms, energy in eV per cell, relaxed_structure), so that an
    export imports back into another database with the same entries."""
    from mliapdb.compute.predictions import export_kind, prediction_rows, relation_rows, write_rows
    from mliapdb.errors import MliapdbError
    from mliapdb.store import database as db

    export_kind(out)
    if name != "predictions" and (model or dataset or settings_hash):
        raise MliapdbError("--model, --dataset and --settings belong to 'export predictions'")
    if name == "predictions" and not model:
        raise MliapdbError("export predictions needs --model NAME")
    db_file = resolve_db(ctx, db_path)
    con = db.connect(db_file, read_only=True)
    try:
        if name == "predictions":
            columns, rows = prediction_rows(con, model, kind, dataset, settings_hash)
        else:
            columns, rows = relation_rows(con, name)
    finally:
        con.close()
    write_rows(out, columns, rows)
    status(f"{db_file}: wrote {len(rows)} rows of {name if name != 'predictions' else model} "
           f"to {out}")
