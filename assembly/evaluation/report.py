"""Rich tables for an evaluation summary (the dict from summary.summarise)."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table


def _f(value: float | None, digits: int = 3, signed: bool = False) -> str:
    if value is None:
        return "–"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}%"


def group_table(summary: dict[str, Any]) -> Table:
    table = Table(title=f"Fidelity of {summary['model']} on {summary['n_questions']} questions "
                        f"({summary['jurors_per_group']} jurors per group, mode {summary['mode']})",
                  title_justify="left")
    for name in ("attribute", "group", "Q", "R", "R smp", "R ign", "R nop", "ΔR ign", "R unif", "R all", "TV",
                 "inv"):
        table.add_column(name, justify="left" if name in ("attribute", "group") else "right",
                         no_wrap=name != "attribute")
    by_attribute: dict[str, list[dict]] = {}
    for g in summary["groups"]:
        by_attribute.setdefault(g["attribute"], []).append(g)
    for attribute, rows in by_attribute.items():
        for g in rows:
            table.add_row(attribute, g["group"], str(g["n_questions"]), _f(g["R"]), _f(g["R_sampled"]),
                          _f(g["R_ignore_persona"]), _f(g["R_no_persona"]),
                          _f(g["R_gain_over_ignore_persona"], signed=True),
                          _f(g["R_uniform"]), _f(g["R_overall"]), _f(g["TV"]), _pct(g["invalid_rate"]))
        a = summary["attributes"][attribute]
        gain = None if a["R"] is None or a["R_ignore_persona"] is None else a["R"] - a["R_ignore_persona"]
        table.add_row(f"[bold]{attribute}[/]", "[bold]mean[/]", "", f"[bold]{_f(a['R'])}[/]",
                      _f(a["R_sampled"]), _f(a["R_ignore_persona"]), _f(a["R_no_persona"]), _f(gain, signed=True),
                      _f(a["R_uniform"]), _f(a["R_overall"]), _f(a["TV"]), _pct(a["invalid_rate"]), end_section=True)
    return table


def steer_table(summary: dict[str, Any]) -> Table | None:
    if not summary["steerability"]:
        return None
    table = Table(title="Steerability: R to own group minus R to the opposed group (> 0 is good)", title_justify="left")
    for name in ("pair A / B", "Q", "A", "B", "steer", "R sim A~B", "R human A~B", "|shift| sim", "|shift| hum",
                 "dir ok"):
        table.add_column(name, justify="left" if name == "pair A / B" else "right", no_wrap=True)
    for s in summary["steerability"]:
        table.add_row(f"{s['group_a']} / {s['group_b']}", str(s["n_questions"]), _f(s["steer_a"], signed=True),
                      _f(s["steer_b"], signed=True), _f(s["steerability"], signed=True), _f(s["R_between_sim"]),
                      _f(s["R_between_human"]), _f(s["mean_abs_shift_sim"]), _f(s["mean_abs_shift_human"]),
                      _pct(s["shift_direction_agreement"]))
    return table


LEGEND = ("R: 1 - W1/(K-1) of the simulated group (the mean of its jurors' distributions) vs the real group (mean "
          "over ordinal questions); R smp: the same for the tally of the jurors' sampled votes; "
          "R ign: jurors from the whole population (ignore persona); R nop: a prompt without persona; "
          "ΔR ign: R - R ign; R unif / R all: human baselines (uniform answer; the overall distribution); "
          "TV: total variation (all questions); inv: invalid or refused ballots.")


def render(summary: dict[str, Any], console: Console) -> None:
    console.print(group_table(summary))
    console.print(LEGEND, style="dim")
    steer = steer_table(summary)
    if steer is not None:
        console.print(steer)
        console.print("A: R(sim A, human A) - R(sim A, human B); B: likewise; steer: their mean (0 when the personas "
                      "change nothing); |shift|: mean answer-position gap A→B on a 0..1 scale; dir ok: share of "
                      "questions where the simulated gap has the human sign.", style="dim")
    overall = summary.get("overall")
    if overall:
        console.print(
            f"Against the overall population ({overall['n_questions']} questions): "
            f"R ignore-persona {_f(overall['R_ignore_persona'])}, R no-persona {_f(overall['R_no_persona'])}, "
            f"R uniform {_f(overall['R_uniform'])}"
        )
    if summary["skipped_groups"]:
        skipped = "; ".join(f"{k} ({v})" for k, v in summary["skipped_groups"].items())
        console.print(f"[yellow]Not seated (not in the population frame):[/] {skipped}")
    position = summary["position_bias"]
    if position:
        console.print(
            f"Option position: the first-listed answer gets {_f(position['first'])} on average, against "
            f"{_f(position['expected'])} for the same answers averaged over orders (ratio {_f(position['ratio'])}, "
            f"1 = no position effect; {position['ballots']} ballots)"
        )
    console.print(
        f"{summary['ballots']} ballots in {summary['calls']} calls ({_f(summary['calls_per_ballot'], 2)} per "
        f"ballot; {summary['option_orders']} option orders, calibration {summary['calibration']}, "
        f"vote {summary['vote']}), invalid {_pct(summary['invalid_rate'])}, "
        f"wall {summary['wall_s']:.1f} s ({summary['ballots_per_s'] or 0:.1f} ballots/s)"
    )
