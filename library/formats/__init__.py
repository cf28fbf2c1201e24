"""LoRA file formats: read kohya/A1111, diffusers (legacy and PEFT) and plain PEFT; write kohya."""

from library.formats.header import read_header
from library.formats.plan import AdapterPlan, PlannedModule
from library.formats.reader import detect_format, plan_file, read_adapter
from library.formats.writer import write_kohya

__all__ = ["AdapterPlan", "PlannedModule", "detect_format", "plan_file", "read_adapter", "read_header", "write_kohya"]
