"""The Typer application and the entry point that turns every user-facing error into one line and an exit code."""

from __future__ import annotations

import os
import signal
import sys

import typer

try:  # typer vendors click from 0.2x on; older typers use click itself
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover
    from click import exceptions as click_exceptions

from assembly.cli import eval as eval_cli
from assembly.cli import jury, mcp, run, serve, spec, study, validate
from assembly.cli import store as store_cli
from assembly.cli.console import err
from assembly.errors import AssemblyError
from transcripts.errors import StoreError

app = typer.Typer(
    name="assembly",
    help="Simulated citizens' assemblies: draw a jury, hear witnesses, deliberate, vote, and record everything.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("run")(run.run)
app.command("validate")(validate.validate)
app.command("study")(study.study)
app.command("spec")(spec.spec)
jury_app = typer.Typer(help="Preview jury draws.", no_args_is_help=True)
jury_app.command("sample")(jury.sample)
app.add_typer(jury_app, name="jury")
app.command("serve")(serve.serve)  # fastapi and uvicorn load when the command runs, not here
app.command("mcp")(mcp.mcp)  # the mcp SDK loads when the command runs
eval_app = typer.Typer(help="Measure fidelity against real survey answers.", no_args_is_help=True)
eval_app.command("survey")(eval_cli.survey)
app.add_typer(eval_app, name="eval")
store_cli.register(app)

COMMANDS_GROUP = "assembly.commands"  # entry points: `name = "package.module:register"`, register(app) adds commands


def register_plugins(target: typer.Typer, plugins=None) -> list[str]:
    """Commands other installed packages add through the `assembly.commands` entry point (finetune's, for one).

    The engine never imports those packages by name. A plugin is skipped only when its own module is missing (stale
    metadata after an uninstall): a ModuleNotFoundError naming that module. Any other error — a dependency the plugin
    imports, a bug in it — is raised, never swallowed. `plugins`: entry points to load instead of the installed ones
    (tests). Returns the names of the plugins registered."""
    from importlib.metadata import entry_points

    registered = []
    seen = set()
    for ep in entry_points(group=COMMANDS_GROUP) if plugins is None else plugins:
        if ep.name in seen:  # the same distribution found twice on sys.path (an editable install's egg-info)
            continue
        seen.add(ep.name)
        module = ep.value.partition(":")[0].strip()
        try:
            register = ep.load()
        except ModuleNotFoundError as exc:
            if exc.name and (module == exc.name or module.startswith(exc.name + ".")):
                continue
            raise
        register(target)
        registered.append(ep.name)
    return registered


register_plugins(app)


def _terminate(signum, frame) -> None:
    """SIGTERM (timeout, kill) unwinds like Ctrl-C, so a running assembly is marked interrupted, not left running."""
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. AssemblyError -> 'error: …' on one line, exit 2; usage errors exit 2; Ctrl-C exits 130."""
    signal.signal(signal.SIGTERM, _terminate)
    try:
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and code:  # click returns Exit codes in non-standalone mode (Ctrl-C -> 130)
            if code == 130:
                err.print("interrupted", highlight=False)
            sys.exit(code)
    except (AssemblyError, StoreError) as exc:  # StoreError: the store is a plain library with its own error type
        err.print(f"error: {exc}", highlight=False, markup=False)
        sys.exit(getattr(exc, "exit_code", 2))
    except click_exceptions.NoArgsIsHelpError as exc:
        err.print(exc.format_message(), highlight=False, markup=False)
        sys.exit(2)
    except click_exceptions.UsageError as exc:
        err.print(f"error: {exc.format_message()} (see 'assembly --help')", highlight=False, markup=False)
        sys.exit(2)
    except click_exceptions.ClickException as exc:
        err.print(f"error: {exc.format_message()}", highlight=False, markup=False)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:  # never a traceback for users; ASSEMBLY_DEBUG=1 shows it
        if os.environ.get("ASSEMBLY_DEBUG"):
            raise
        err.print(f"error: internal error ({type(exc).__name__}): {exc} — set ASSEMBLY_DEBUG=1 for the traceback",
                  highlight=False, markup=False)
        sys.exit(1)
