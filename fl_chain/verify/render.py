"""How an audit is shown: a table per round and a verdict, JSON, or a Markdown/HTML report."""

from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Any

from fl_chain.errors import UsageError
from fl_chain.rundir import read_run_file
from fl_chain.verify.audit import EXCLUSION_CHECK, Audit, CommitmentLine, RoundLineage
from fl_chain.verify.findings import Finding, Status

MARKS = {Status.PASSED: "✓", Status.FAILED: "✗", Status.UNCHECKED: "·"}
PARTICIPANT_CHECKS = ("member", "before deadline", "once", "blob matches its CID", "header matches commitment", "update opens")
COLUMN_TITLES = ("member", "deadline", "once", "blob", "header", "opens")
ROUND_CHECKS = (
    "opened on the accepted model", "commitments accounted for", "quorum", "commitment events complete",
    "base model stored", "global model stored", "re-aggregation", "committee drawn by the rule",
    "attester is on the committee", "attestations reached the threshold", "no dissent before acceptance",
    "dissents judged", "accepted the finalized model",
)


def short(value: object, keep: int = 8) -> str:
    text = str(value)
    return text if len(text) <= 2 * keep + 1 else f"{text[:keep]}…{text[-keep:]}"


def _mark(findings: list[Finding], check: str, participant: str | None = None) -> str:
    relevant = [f for f in findings if f.check == check and (participant is None or f.participant == participant)]
    if not relevant:
        return " "
    if any(f.status == Status.FAILED for f in relevant):
        return MARKS[Status.FAILED]
    if any(f.status == Status.UNCHECKED for f in relevant):
        return MARKS[Status.UNCHECKED]
    return MARKS[Status.PASSED]


def verdict(result: Audit) -> str:
    findings = result.findings
    passed = sum(f.status == Status.PASSED for f in findings.items)
    unchecked = sorted({f.check for f in findings.items if f.status == Status.UNCHECKED})
    not_checked = f"; not checked: {', '.join(unchecked)} (see above)" if unchecked else ""
    lines = [f"verdict: PASSED, {passed} checks passed{not_checked}"] if findings.ok else [
        f"verdict: FAILED, {len(findings.failures)} of {len(findings.items)} checks failed{not_checked}"]
    lines += [f"  ✗ {failure.describe()}" for failure in findings.failures]
    not_rejudged = [f for f in findings.items if f.check == EXCLUSION_CHECK and f.status == Status.UNCHECKED]
    if not_rejudged:
        lines.append(f"WARNING: {len(not_rejudged)} exclusion(s) could not be re-judged: an aggregator that excluded a "
                     "valid update would pass these checks. " + not_rejudged[0].detail)
    return "\n".join(lines)


def text_report(result: Audit) -> str:
    lines = [f"federation {result.federation} on chain {result.chain_id}, genesis model {result.genesis}"]
    lines += [f"  {MARKS[f.status]} {f.check}" + (f": {f.detail}" if f.status != Status.PASSED else "")
              for f in result.findings.for_round(None)]
    for number in sorted(result.rounds):
        lines += _round_table(result, result.rounds[number])
    lines.append(verdict(result))
    return "\n".join(lines)


def _round_table(result: Audit, lineage: RoundLineage) -> list[str]:
    findings = result.findings.for_round(lineage.round)
    agreeing = sum(agrees for _, _, agrees in lineage.attestations)
    status = "accepted" if lineage.accepted else "not accepted"
    retried = f", after {lineage.failed_attempts} failed attempt(s)" if lineage.failed_attempts else ""
    lines = [f"round {lineage.round}: base {short(lineage.base)} -> model {short(lineage.global_model)}, "
             f"{status} ({agreeing} agreeing attestations{retried})"]
    header = f"  {'participant':<19} {'examples':>8}  {'update':<17} " + " ".join(f"{t:<8}" for t in COLUMN_TITLES)
    lines.append(header + " included")
    for line in lineage.commitments:
        marks = " ".join(f"{_mark(findings, check, line.participant):<8}" for check in PARTICIPANT_CHECKS)
        lines.append(f"  {short(line.participant):<19} {line.examples:>8}  {short(line.cid):<17} {marks} "
                     f"{_inclusion(findings, line)}")
    lines.append("  " + "  ".join(f"{_mark(findings, check)} {check}" for check in ROUND_CHECKS
                                 if _mark(findings, check) != " "))
    return lines


def _inclusion(findings: list[Finding], line: CommitmentLine) -> str:
    """"yes", "no", or the exclusion's reason and whether it stood up: "excluded: wrong shape ✓"."""
    if line.included:
        return "yes"
    if line.exclusion is None:
        return "no"
    return f"excluded: {line.exclusion.label} {_mark(findings, EXCLUSION_CHECK, line.participant)}".rstrip()


def json_report(result: Audit, seconds: float) -> dict[str, Any]:
    return {
        "ok": result.findings.ok,
        "federation": result.federation,
        "chain_id": result.chain_id,
        "genesis": str(result.genesis),
        "opened_with": result.opened_with,
        "seconds": round(seconds, 3),
        "rounds": [_lineage_json(result.rounds[n]) for n in sorted(result.rounds)],
        "findings": result.findings.to_json(),
    }


def _lineage_json(lineage: RoundLineage) -> dict[str, Any]:
    return {
        "round": lineage.round,
        "attempt": lineage.attempt,
        "base": str(lineage.base),
        "global_model": str(lineage.global_model) if lineage.global_model else None,
        "accepted": lineage.accepted,
        "commitments": [{"participant": c.participant, "examples": c.examples, "cid": str(c.cid),
                         "included": c.included, "excluded": c.exclusion.name.lower() if c.exclusion else None}
                        for c in lineage.commitments],
        "attestations": [{"validator": v, "cid": str(cid), "agrees": agrees} for v, cid, agrees in lineage.attestations],
    }


MAX_PLOTS = 8  # a run draws its headline figure, its loss and its data spread


def document_report(result: Audit, path: Path, run_dir: Path | None) -> None:
    """A report for people: the final model's lineage, the run's plots, every failure."""
    plots = [plot for plot in sorted(run_dir.glob("*.png")) if _is_png(plot)][:MAX_PLOTS] if run_dir else []
    sections = _document_sections(result)
    if path.suffix.lower() in (".html", ".htm"):
        path.write_text(_html(sections, plots))
    else:
        path.write_text(_markdown(sections, plots, path.parent))


def _document_sections(result: Audit) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, paragraphs, table rows with a header row) per section."""
    summary = [f"Federation {result.federation} on chain {result.chain_id}; genesis model {result.genesis}.",
               verdict(result).splitlines()[0]]
    sections: list[tuple[str, list[str], list[list[str]]]] = [("Verification", summary, [])]
    accepted = [result.rounds[n] for n in sorted(result.rounds) if result.rounds[n].accepted]
    if accepted:
        sections.append(("Lineage of the final model",
                         [f"The final model {accepted[-1].global_model} is the last of this chain of accepted rounds."],
                         [["round", "base model", "updates (participant: examples)", "excluded (participant: reason)",
                           "global model", "attestations"]]
                         + [[str(r.round), str(r.base),
                             "; ".join(f"{c.participant}: {c.examples}" for c in r.commitments if c.included),
                             "; ".join(f"{c.participant}: {c.exclusion.label}" for c in r.commitments if c.exclusion)
                             or "none",
                             str(r.global_model), str(sum(a for _, _, a in r.attestations))] for r in accepted]))
    rows = [["round", "participant", "check", "result", "evidence"]]
    rows += [[str(f.round or ""), f.participant or "", f.check, f.status.value,
              f.detail + (f" (expected {f.expected}, found {f.found})" if f.expected is not None else "")]
             for f in result.findings.items if f.status != Status.PASSED]
    sections.append(("Failed and unchecked checks", [] if len(rows) > 1 else ["None."], rows if len(rows) > 1 else []))
    return sections


def _md(text: str) -> str:
    """Text inert in Markdown: no link, image or HTML a previewer would fetch or render."""
    escaped = html.escape(text, quote=False)
    return "".join(f"\\{c}" if c in "\\`*_[](){}!#|~" else c for c in escaped)


def _markdown(sections: list[tuple[str, list[str], list[list[str]]]], plots: list[Path], base: Path) -> str:
    out = ["# fl-chain verification report", ""]
    for title, paragraphs, rows in sections:
        out += [f"## {title}", "", *(_md(p) for p in paragraphs), ""]
        if rows:
            out += ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
            out += ["| " + " | ".join(_md(cell) for cell in row) + " |" for row in rows[1:]]
            out.append("")
    if plots:
        out += ["## Metrics", ""] + [f"![{p.stem}]({_relative(p, base)})" for p in plots]
    return "\n".join(out) + "\n"


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_PLOT_BYTES = 16 << 20


def _is_png(path: Path) -> bool:
    """Only a plot the run made goes into a report: a regular PNG file, not a link to some
    other file of the reader's (which the report would then carry to whoever gets it)."""
    try:
        return read_run_file(path, MAX_PLOT_BYTES).startswith(PNG_SIGNATURE)
    except (UsageError, OSError):
        return False


def _relative(path: Path, base: Path) -> str:
    try:
        return str(path.resolve().relative_to(base.resolve()))
    except ValueError:
        return str(path.resolve())


def _html(sections: list[tuple[str, list[str], list[list[str]]]], plots: list[Path]) -> str:
    body = ["<h1>fl-chain verification report</h1>"]
    for title, paragraphs, rows in sections:
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += [f"<p>{html.escape(p)}</p>" for p in paragraphs]
        if rows:
            body.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in rows[0]) + "</tr>")
            body += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]]
            body.append("</table>")
    if plots:
        body.append("<h2>Metrics</h2>")
        body += [f'<img alt="{p.stem}" src="data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}">'
                 for p in plots]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;word-break:break-all}img{max-width:48%}")
    return f"<!doctype html><html><head><meta charset='utf-8'><title>fl-chain verification</title>" \
           f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
