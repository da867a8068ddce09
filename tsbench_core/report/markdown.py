"""Render report blocks as GitHub-flavoured Markdown (figures linked as PNG files beside the report)."""

from __future__ import annotations

from collections.abc import Sequence

from tsbench_core.report.document import Block, Bullets, Figure, Heading, Text
from tsbench_core.report.tables import Table


def _escape(cell: str) -> str:
    return cell.replace("|", "\\|").replace("\n", " ")


def table_markdown(table: Table) -> str:
    lines = [f"**{table.title}**", "", "| " + " | ".join(_escape(h) for h in table.headers) + " |",
             "|" + "|".join("---:" if n else "---" for n in table.numeric) + "|"]
    lines += ["| " + " | ".join(_escape(c) for c in row) + " |" for row in table.rows]
    return "\n".join(lines)


def render_markdown(blocks: Sequence[Block]) -> str:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append("#" * block.level + " " + block.text)
        elif isinstance(block, Text):
            parts.append(block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Table):
            parts.append(table_markdown(block))
        elif isinstance(block, Figure):
            parts.append(f"![{block.caption}]({block.relative})\n\n*{block.caption}* ([SVG]({block.svg_relative}))")
    return "\n\n".join(parts) + "\n"
