"""Adapter file formats: read kohya/A1111/LyCORIS, diffusers (legacy and PEFT), plain PEFT, cloneofsimo and
textual inversions (every family of library/families); write kohya."""

from library.formats.header import read_header
from library.formats.plan import AdapterPlan, PlannedModule
from library.formats.reader import detect_format, plan_file, read_adapter, read_textual_inversion
from library.formats.writer import write_kohya

__all__ = ["AdapterPlan", "PlannedModule", "detect_format", "plan_file", "read_adapter", "read_header",
           "read_textual_inversion", "write_kohya"]
