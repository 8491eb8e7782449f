"""File imports of every entity through one path: read the file, check and write it.

`IMPORTERS` names what can be imported (`grids`, `admin areas`, `cameras`): the function
that checks and writes a frame (`import_grids`, `import_admin_areas`, `import_cameras`),
the audit entity, and the write lock the import holds, so that it never races the
entity's other writers. `import_file` is what the CLI (`gridcover import ...`) and the
HTTP routes (`POST /v1/grids/import`, `/v1/admin-areas/import`, `/v1/cameras/import`)
call.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine

from api.audit import record_write
from api.errors import GridcoverError
from api.services.camera_import import import_cameras
from api.services.coverage import CAMERA_TABLES, begin_camera_write
from api.services.files import read_vector_file
from api.services.grid_import import (
    ImportReport,
    Progress,
    _progress,
    import_admin_areas,
    import_grids,
)
from api.services.grids import begin_grid_write
from api.settings import DEFAULT_MAX_GEOMETRY_VERTICES


@dataclass(frozen=True)
class Importer:
    """How one entity is imported: `run(conn, frame, *, skip_invalid, repair, read_errors,
    progress) -> ImportReport` inside a transaction that `begin_write(conn)` opened."""

    run: Callable[..., ImportReport]
    audit_entity: str
    begin_write: Callable[[Connection], None]
    tables: tuple[str, ...]  # what it may change, for caches keyed on tables


IMPORTERS: dict[str, Importer] = {
    # One grid import at a time: two concurrent ones could each pass the overlap checks
    # against what is stored and together write overlapping grids (villages alike).
    "grids": Importer(import_grids, "grid", begin_grid_write, ("grid",)),
    "admin areas": Importer(import_admin_areas, "admin_area", begin_grid_write, ("admin_area",)),
    # Camera writes wait for each other, so a gb_id checked as free stays free.
    "cameras": Importer(import_cameras, "camera", begin_camera_write, CAMERA_TABLES),
}
AUDIT_ENTITIES = {entity: importer.audit_entity for entity, importer in IMPORTERS.items()}


def import_file(
    engine: Engine,
    path: str | Path,
    entity: str,
    *,
    actor: str,
    coord_sys: str | None = None,
    layer: str | None = None,
    skip_invalid: bool = False,
    repair: bool = False,
    name: str | None = None,
    progress: Progress | None = None,
    max_vertices: int = DEFAULT_MAX_GEOMETRY_VERTICES,
) -> ImportReport:
    """Read a file and import it (`entity`: a key of `IMPORTERS`) in one transaction,
    with an audit row summarising it. Raises the errors of `read_vector_file` and
    `ImportRejected`; nothing is written unless the import succeeds."""
    if entity not in IMPORTERS:
        raise GridcoverError(f"cannot import {entity!r}: use one of {', '.join(IMPORTERS)}")
    importer = IMPORTERS[entity]
    _progress(progress, "reading", 0.0)
    vector = read_vector_file(
        path, coord_sys=coord_sys, layer=layer, name=name, max_vertices=max_vertices
    )
    _progress(progress, "reading", 1.0)
    with engine.begin() as conn:
        importer.begin_write(conn)
        report = importer.run(
            conn,
            vector.frame,
            skip_invalid=skip_invalid,
            repair=repair,
            read_errors=vector.errors,
            progress=progress,
        )
        report.source = {
            "file": vector.name,
            "format": vector.format,
            "layer": vector.layer,
            "coordinates": vector.coords,
        }
        record_write(
            conn,
            actor,
            "import",
            importer.audit_entity,
            None,
            after={
                **report.source,
                "read": report.read,
                "written": report.written,
                "rejected_rows": report.rejected_rows,
                "repaired": len(report.repaired),
                "skip_invalid": skip_invalid,
                "repair": repair,
            },
        )
    return report
