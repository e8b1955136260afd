"""The recipes of the docs, run as written against the sandbox over real HTTP.

docs/python-api.md has three ``python`` blocks (a notebook cell, an Airflow ``PythonOperator``
callable, a script that sends a Parquet file) and docs/running-as-a-job.md one (a
``BashOperator``). Airflow itself is not installed: its operator and exception classes are
stand-ins put in ``sys.modules`` that record what the recipe gives them, and the
``BashOperator``'s templates are rendered with jinja2 under Airflow's rules (``StrictUndefined``:
a name the recipe never defines fails, as it would in Airflow). Only the locations change:
the folder becomes the test's and the program the one installed here.
"""

from __future__ import annotations

import ast
import asyncio
import fcntl
import inspect
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any, ClassVar

import orjson
import pytest

try:
    import jinja2
    import pyarrow as pa
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - CI installs them
    if os.environ.get("CI") == "true":
        raise
    pytest.skip(
        "jinja2, pandas and pyarrow are not installed: pip install -e '.[test]' installs them",
        allow_module_level=True,
    )

import bulk_sender
from bulk_sender.sandbox.server import Sandbox
from tests.conftest import API_KEY, KEY_ENV, read_results, write_config, write_csv
from tests.test_docs import DOCS, fences

PYTHON_API = DOCS / "python-api.md"
JOB = DOCS / "running-as-a-job.md"
EXIT_CODES = DOCS / "exit-codes.md"


def _blocks(path: Path, info: str) -> list[str]:
    return [f.content for f in fences(path.read_text(encoding="utf-8")) if f.info == info]


class _AirflowFailError(Exception):
    """Stands in for airflow.exceptions.AirflowFailException: fail, do not retry."""


class _Operator:
    """Stands in for an Airflow operator: keeps the keyword arguments the recipe gives it."""

    made: ClassVar[list[_Operator]] = []

    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        _Operator.made.append(self)


@pytest.fixture
def airflow(monkeypatch: pytest.MonkeyPatch) -> list[_Operator]:
    """Airflow's modules as the recipes import them; returns the operators they make."""
    modules: dict[str, dict[str, object]] = {
        "airflow": {},
        "airflow.exceptions": {"AirflowFailException": _AirflowFailError},
        "airflow.operators": {},
        "airflow.operators.python": {"PythonOperator": _Operator},
        "airflow.operators.bash": {"BashOperator": _Operator},
    }
    for name, attributes in modules.items():
        module = types.ModuleType(name)
        for attribute, value in attributes.items():
            setattr(module, attribute, value)
        monkeypatch.setitem(sys.modules, name, module)
    _Operator.made = []
    return _Operator.made


def _phones(n: int) -> list[int]:
    return [919876500000 + i for i in range(n)]


def test_the_notebook_recipe(
    tmp_path: Path, sandbox: Sandbox, api_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notebook cell, awaited at top level in a running loop, sends the two valid rows, and
    sends nothing when run again."""
    notebook = _blocks(PYTHON_API, "python")[0]
    monkeypatch.chdir(tmp_path)
    write_config(tmp_path / "config.toml", sandbox.url)
    code = compile(notebook, "notebook-cell", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    namespace: dict[str, Any] = {}

    async def run_cell() -> None:
        result = eval(code, namespace)
        if inspect.iscoroutine(result):
            await result

    asyncio.run(run_cell())
    assert sorted(sandbox.counts()) == ["+919876543210", "+919876543211"]
    assert namespace["run"].statuses["invalid"] == 1
    assert namespace["not_sent"]["status"].tolist() == ["invalid"]
    asyncio.run(run_cell())
    assert len(sandbox.received) == 2


def _airflow_task(airflow: list[_Operator], tmp_path: Path, sandbox: Sandbox) -> _Operator:
    """The PythonOperator recipe, executed; its campaign made under the test's folder."""
    exec(_blocks(PYTHON_API, "python")[1], {})
    [operator] = airflow
    name = operator.kwargs["op_kwargs"]["name"]
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    pq.write_table(pa.table({"phone": _phones(3)}), tmp_path / "in" / f"{name}.parquet")
    write_config(tmp_path / "config.toml", sandbox.url)
    return operator


def test_the_airflow_python_recipe(
    tmp_path: Path, sandbox: Sandbox, api_key: str, airflow: list[_Operator]
) -> None:
    """The PythonOperator's callable sends the Parquet campaign and returns the summary; it
    retries nothing and fails at once on a missing file."""
    operator = _airflow_task(airflow, tmp_path, sandbox)
    kwargs = operator.kwargs
    assert kwargs["retries"] >= 1 and kwargs["execution_timeout"]
    task = kwargs["python_callable"]
    summary = task(**kwargs["op_kwargs"], folder=str(tmp_path))
    assert (summary["outcome"], summary["exit_code"]) == ("finished", 0)
    assert orjson.dumps(summary)  # an XCom must be JSON
    assert len(sandbox.received) == 3
    with pytest.raises(_AirflowFailError, match="no such file"):
        task(name="missing", folder=str(tmp_path))


def test_the_airflow_python_recipe_lets_airflow_retry_a_busy_campaign(
    tmp_path: Path, sandbox: Sandbox, api_key: str, airflow: list[_Operator]
) -> None:
    """While another process holds the campaign's lock the callable raises AlreadyRunningError
    itself (Airflow retries it), not AirflowFailException."""
    operator = _airflow_task(airflow, tmp_path, sandbox)
    name = operator.kwargs["op_kwargs"]["name"]
    lock = tmp_path / "out" / f"{name}.results.csv.lock"
    with lock.open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(bulk_sender.AlreadyRunningError):
            operator.kwargs["python_callable"](name=name, folder=str(tmp_path))
    assert sandbox.received == []


def test_the_parquet_script_recipe(tmp_path: Path, sandbox: Sandbox) -> None:
    """send_parquet.py, run as the page says, sends every row of a multi-row-group file and
    exits with bulk-sender's code."""
    script = _blocks(PYTHON_API, "python")[2]
    [command] = _blocks(PYTHON_API, "sh")[1:]
    assert command == "python send_parquet.py audience.parquet"
    (tmp_path / "send_parquet.py").write_text(script, encoding="utf-8")
    pq.write_table(pa.table({"phone": _phones(120)}), tmp_path / "audience.parquet", 50)
    write_config(tmp_path / "config.toml", sandbox.url)
    done = subprocess.run(
        [sys.executable, *command.split()[1:]],
        cwd=tmp_path,
        env={**os.environ, KEY_ENV: API_KEY},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Campaign" in done.stdout
    assert [r["status"] for r in read_results(tmp_path / "audience.results.csv")] == ["sent"] * 120


def test_the_airflow_bash_recipe(
    tmp_path: Path, sandbox: Sandbox, airflow: list[_Operator]
) -> None:
    """The BashOperator, rendered by Airflow's templating rules with its own params (folder and
    program moved here), runs as written: results and summary where the recipe says."""
    [block] = _blocks(JOB, "python")
    exec(block, {})
    [operator] = airflow
    kwargs = operator.kwargs
    params = {**kwargs["params"], "dir": str(tmp_path), "program": _program()}
    name = params["name"]
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    write_csv(tmp_path / "in" / f"{name}.csv", ["to"], [[f"+{p}"] for p in _phones(3)])
    write_config(tmp_path / "config.toml", sandbox.url, kaleyra={"api_key_env": "KALEYRA_API_KEY"})
    templates = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)
    context = {"params": params, "var": {"value": {"kaleyra_api_key": API_KEY}}}
    command = templates.from_string(kwargs["bash_command"]).render(context)
    env = {k: templates.from_string(v).render(context) for k, v in kwargs["env"].items()}
    assert kwargs["append_env"] is True
    done = subprocess.run(
        ["bash", "-c", command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / f"{name}.results.csv").is_file()
    assert not list(tmp_path.rglob("*.csv.results.csv"))
    summary = orjson.loads((tmp_path / "out" / f"{name}.summary.json").read_bytes())
    assert (summary["outcome"], summary["exit_code"]) == ("finished", 0)
    assert sandbox.received[0].headers["api-key"] == API_KEY


def _program() -> str:
    """The bulk-sender installed with this interpreter."""
    return str(Path(sys.executable).with_name("bulk-sender"))


def _worth_a_retry_in_the_table() -> set[int]:
    """The codes docs/exit-codes.md marks "yes" in its "worth a retry" column."""
    rows = re.findall(r"^\| `(\d+)` \|.*\| ([^|]*) \|$", EXIT_CODES.read_text("utf-8"), re.M)
    assert len(rows) >= 9
    return {int(code) for code, retry in rows if retry.startswith("yes")}


def _codes_in(sentence: str) -> set[int]:
    return {int(code) for code in re.findall(r"`(\d+)`", sentence)}


def test_the_retry_policy_agrees_with_the_exit_code_table(airflow: list[_Operator]) -> None:
    """The codes worth a retry: the table's, the Python recipe's RETRY, both pages' prose, and
    what busy and signal-stopped runs exit with are one and the same set."""
    worth = _worth_a_retry_in_the_table()
    signals = {128 + s for s in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)}
    assert worth == {bulk_sender.AlreadyRunningError.exit_code, *signals}
    namespace: dict[str, Any] = {}
    exec(_blocks(PYTHON_API, "python")[1], namespace)
    assert namespace["RETRY"] == worth
    for page in (PYTHON_API, JOB):
        found = re.search(r"worth a retry are (.*?)[:;]", page.read_text("utf-8"), re.S)
        assert found is not None, page
        assert _codes_in(found.group(1)) == worth, page
    assert {c.value for c in bulk_sender.ExitCode} <= {int(c) for c in _all_codes()}


def _all_codes() -> list[str]:
    return re.findall(r"^\| `(\d+)` \|", EXIT_CODES.read_text("utf-8"), re.M)
