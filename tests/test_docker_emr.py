"""docker/Dockerfile, .dockerignore, docker/emr/ and the scripts they call.

Docker cannot run on the machines this suite runs on, so the image is checked by what it is made of: every RUN
calls one script of scripts/ that this suite or CI runs, with the versions coming from constraints.txt and
setup.py. The system-package script runs here for real (everything present: it must change nothing) and against
fake package managers on a trimmed PATH (what it would install where things are missing). The EMR bootstrap is
shell-checked and run in its dry-run mode on artifacts packaged from this checkout; steps.json is parsed the way
spark-submit and the jobs parse it, and submitted to a moto-mocked EMR through boto3's own parameter validation.
"""

import glob
import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

import pyspark
from spark_retrieval.config import load_config
from spark_retrieval.errors import UserError
from spark_retrieval.jobs import parse_arguments, validate

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "docker" / "Dockerfile"
EMR = REPO / "docker" / "emr"
SYSTEM_PACKAGES = REPO / "scripts" / "install_system_packages.sh"
BOOTSTRAP = EMR / "bootstrap.sh"
PACKAGE = REPO / "scripts" / "package_artifacts.sh"
BUCKET = "example-bucket"
BASH = shutil.which("bash")

# Scripts a Dockerfile RUN may call, and who runs them: this file, or CI (.ci/run → make test → Makefile → setup.sh).
RUN_HERE = {"scripts/install_system_packages.sh"}
RUN_BY_CI = {"scripts/setup.sh"}


def bash(*args, env=None, cwd=None, timeout=120):
    return subprocess.run([BASH, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


# -- Dockerfile ------------------------------------------------------------------------------------------------


def instructions(path=DOCKERFILE):
    """(INSTRUCTION, arguments) pairs, comments dropped and continuation lines joined."""
    result, pending = [], ""
    for line in path.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line
        pending = ""
        keyword, _, rest = text.strip().partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return result


def test_dockerfile_base_image_is_python_3_11_and_entrypoint_is_the_cli():
    steps = instructions()
    froms = [args for keyword, args in steps if keyword == "FROM"]
    assert froms == ["python:3.11-slim-bookworm"]
    setup_py = (REPO / "setup.py").read_text()
    assert 'python_requires=">=3.11"' in setup_py
    assert "spark-retrieval=spark_retrieval.cli:main" in setup_py  # the console script ENTRYPOINT runs
    [entrypoint] = [args for keyword, args in steps if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["spark-retrieval"]
    env = " ".join(args for keyword, args in steps if keyword == "ENV")
    venv = "/opt/spark-retrieval/.venv"  # WORKDIR + the .venv setup.sh creates
    assert ("WORKDIR", "/opt/spark-retrieval") in steps
    assert f"PATH={venv}/bin:" in env and f"PYSPARK_PYTHON={venv}/bin/python" in env
    assert "SPARK_LOCAL_IP=127.0.0.1" in env


def test_every_dockerfile_run_calls_one_script_that_is_tested_or_run_by_ci():
    runs = [args for keyword, args in instructions() if keyword == "RUN"]
    assert runs, "no RUN steps"
    called = []
    for command in runs:
        words = shlex.split(command)
        assert not {"&&", "||", ";", "|"} & set(words) and ";" not in command, f"RUN does more than call a script: {command}"
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            words.pop(0)  # VAR=value prefixes
        assert words[0] == "bash" and len(words) == 2, f"RUN must be 'bash scripts/<name>.sh': {command}"
        assert (REPO / words[1]).is_file(), f"{words[1]} does not exist"
        called.append(words[1])
    assert set(called) <= RUN_HERE | RUN_BY_CI, f"scripts nobody runs before the image is built: {set(called) - RUN_HERE - RUN_BY_CI}"
    assert called == ["scripts/install_system_packages.sh", "scripts/setup.sh"]
    # CI's path to setup.sh, which is what makes RUN_BY_CI true.
    assert "make test" in (REPO / ".ci" / "run").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: \$\(STAMP\)", makefile, re.M) and "bash scripts/setup.sh" in makefile
    # The scripts setup.sh calls in turn are in the image too (COPY . .) and not ignored.
    assert "bash scripts/install_horovod.sh" in (REPO / "scripts" / "setup.sh").read_text()


def test_dockerfile_pins_no_versions_of_its_own():
    """Versions live in constraints.txt / setup.py / install_horovod.sh; the Dockerfile only names the base image."""
    text = "\n".join(args for keyword, args in instructions() if keyword != "FROM")
    assert not re.search(r"==\s*\d|torch-\d|horovod-\d|pyspark-\d", text)
    constraints = (REPO / "constraints.txt").read_text()
    assert re.search(r"^torch==2\.13\.0$", constraints, re.M) and re.search(r"^pyspark==4\.3\.\d+$", constraints, re.M)
    assert 'HVD_VERSION="${HVD_VERSION:-0.28.1}"' in (REPO / "scripts" / "install_horovod.sh").read_text()
    # torch's CPU wheels: an extra index whose 2.13.0+cpu satisfies the torch==2.13.0 constraint.
    [arg] = [args for keyword, args in instructions() if keyword == "ARG" and args.startswith("TORCH_INDEX_URL=")]
    assert arg.endswith("/whl/cpu")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule for a path of the build context: the last matching pattern wins; a match on a parent counts."""
    ignored = False
    parts = path.split("/")
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for depth in range(1, len(parts) + 1):
            prefix = "/".join(parts[:depth])
            if fnmatch(prefix, pattern) or (pattern.startswith("**/") and fnmatch(prefix.split("/")[-1], pattern[3:])):
                ignored = not negate
                break
    return ignored


def test_dockerignore_keeps_the_source_and_drops_local_state():
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    needed = [p for p in tracked if p.split("/")[0] in ("setup.py", "README.md", "constraints.txt", "scripts", "spark_retrieval", "jobs", "schemas")]
    needed += ["scripts/install_system_packages.sh", "scripts/setup.sh", "scripts/install_horovod.sh", "scripts/cxx17_wrapper.sh"]
    assert not [p for p in needed if dockerignored(p, patterns)]
    for local in (".venv/bin/python", ".git/HEAD", "spark_retrieval/__pycache__/x.pyc", "results/results.md",
                  "dist/spark_retrieval-0.1.0-py3-none-any.whl", "spark_retrieval.egg-info/PKG-INFO",
                  "notebooks/.ipynb_checkpoints/quickstart-checkpoint.ipynb"):
        assert dockerignored(local, patterns), local


# -- scripts/install_system_packages.sh ----------------------------------------------------------------------


def test_system_packages_on_this_machine_are_present_so_nothing_is_installed():
    """What the Docker layer and EMR bootstrap run; here (Java, g++, make, cmake, procps present) it must be a no-op."""
    assert bash("-n", SYSTEM_PACKAGES).returncode == 0
    check = bash(SYSTEM_PACKAGES, "--check")
    if check.returncode == 1:  # only where `make setup` could build Horovod is everything there
        pytest.skip(f"this machine is not fully set up: {check.stdout.strip()}")
    assert check.returncode == 0 and "nothing to do" in check.stdout, check.stdout + check.stderr
    run = bash(SYSTEM_PACKAGES)
    assert run.returncode == 0 and "nothing to do" in run.stdout and "installing" not in run.stdout
    assert bash(SYSTEM_PACKAGES, "--bogus").returncode != 0


def fake_root(tmp_path, manager, uid=0):
    """A PATH with only what the script needs, a fake package manager (logs its arguments) and a fake `id`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("env", "sed", "cat", "dirname"):
        os.symlink(shutil.which(tool), bin_dir / tool)
    log = tmp_path / "calls.log"
    for name, body in ((manager, f'echo "{manager} $*" >> {log}'), ("id", f'[ "$1" = -u ] && echo {uid} || echo 0'),
                       ("mkdir", f'echo "mkdir $*" >> {log}'),
                       ("sudo", f'echo "sudo $*" >> {log}; exec "$@"')):
        script = bin_dir / name
        script.write_text(f"#!{shutil.which('bash')}\n{body}\n")
        script.chmod(script.stat().st_mode | stat.S_IEXEC)
    empty = tmp_path / "no-cmake-no-openblas"
    empty.mkdir()
    env = {"PATH": str(bin_dir), "PYTHON": sys.executable, "CMAKE_DIRS": str(empty), "LIBRARY_DIRS": str(empty),
           "HOME": str(tmp_path)}
    return env, log


def test_system_packages_installs_what_is_missing_with_apt_get(tmp_path):
    env, log = fake_root(tmp_path, "apt-get")
    assert bash(SYSTEM_PACKAGES, "--check", env=env).returncode == 1
    dry = bash(SYSTEM_PACKAGES, "--dry-run", env=env)
    assert dry.returncode == 0 and not log.exists(), dry.stderr
    assert "would run: apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless g++ make cmake procps libopenblas0-serial" in dry.stdout
    run = bash(SYSTEM_PACKAGES, env=env)
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines() == [
        "mkdir -p /usr/share/man/man1",  # slim images lack it; the JDK's post-install step needs it
        "apt-get update -qq",
        "apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless g++ make cmake procps libopenblas0-serial",
    ]


def test_system_packages_uses_dnf_with_sudo_on_amazon_linux(tmp_path):
    """EMR's nodes: Amazon Linux (dnf), bootstrap actions run as a user with sudo."""
    env, log = fake_root(tmp_path, "dnf", uid=1000)
    env["PYTHON"] = "python3.11"  # not on this trimmed PATH: installed, with its headers
    packages = "java-17-amazon-corretto-headless gcc-c++ make cmake procps-ng openblas python3.11 python3.11-devel"
    dry = bash(SYSTEM_PACKAGES, "--dry-run", env=env)
    assert f"would run: sudo dnf install -y -q {packages}" in dry.stdout, dry.stdout + dry.stderr
    run = bash(SYSTEM_PACKAGES, env=env)
    assert run.returncode == 0, run.stderr
    assert log.read_text().splitlines()[0] == f"sudo dnf install -y -q {packages}"


# -- EMR: artifacts and bootstrap ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    out = tmp_path_factory.mktemp("artifacts")
    result = bash(PACKAGE, out, sys.executable, timeout=300)
    assert result.returncode == 0, result.stderr
    return out


def test_package_artifacts_lays_out_the_wheel_scripts_and_jobs(artifacts):
    [wheel] = glob.glob(str(artifacts / "spark_retrieval-*-py3-none-any.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    assert "spark_retrieval/jobs.py" in names and "spark_retrieval/data/bundled/ml-latest-small/ratings.parquet" in names
    assert "spark_retrieval/models/two_tower/schemas/dssm_movielens.yaml" in names
    assert not [n for n in names if "__pycache__" in n]
    for relative in ("constraints.txt", "emr/bootstrap.sh", "scripts/install_system_packages.sh",
                     "scripts/install_horovod.sh", "scripts/cxx17_wrapper.sh", "jobs/prepare.py", "jobs/train.py",
                     "jobs/evaluate.py", "jobs/conf/ml-1m_item_cf.yaml", "jobs/conf/ml-1m_simplex_ccl.yaml"):
        assert (artifacts / relative).is_file(), relative
    assert (artifacts / "constraints.txt").read_text() == (REPO / "constraints.txt").read_text()


def test_bootstrap_dry_run_on_packaged_artifacts_changes_nothing(artifacts, tmp_path):
    assert bash("-n", BOOTSTRAP).returncode == 0
    prefix = tmp_path / "opt" / "spark-retrieval"
    result = bash(BOOTSTRAP, "--dry-run", "--prefix", prefix, artifacts,
                  env={**os.environ, "PYTHON": sys.executable, "TORCH_INDEX_URL": ""})
    assert result.returncode == 0, result.stderr
    assert not prefix.exists()
    commands = [line[2:] for line in result.stdout.splitlines() if line.startswith("+ ")]
    local = f"{prefix}/artifacts"
    venv_python = f"{prefix}/venv/bin/python"
    wheel = Path(glob.glob(str(artifacts / "spark_retrieval-*.whl"))[0]).name
    assert commands[:3] == [f"mkdir -p {prefix}", f"mkdir -p {local}", f"cp -R {artifacts}/. {local}/"]
    assert f"PYTHON={sys.executable} bash {local}/scripts/install_system_packages.sh" in commands
    assert "nothing to do" in result.stdout or "would run:" in result.stdout  # the system-package script's dry run
    pip = [c for c in commands if c.startswith(f"{venv_python} -m pip install")]
    assert len(pip) == 3 and all(f"-c {local}/constraints.txt" in c for c in pip)
    assert pip[1].endswith(f"{local}/{wheel}[torch]") and "--extra-index-url" not in pip[1]
    assert pip[2].endswith("cloudpickle psutil cffi packaging pyyaml")
    # Horovod's runtime dependencies are the ones scripts/setup.sh installs before install_horovod.sh.
    assert "cloudpickle psutil cffi packaging pyyaml" in (REPO / "scripts" / "setup.sh").read_text()
    assert f"bash {local}/scripts/install_horovod.sh {venv_python}" in commands[-2]
    assert commands[-1].startswith(f"{venv_python} -c import spark_retrieval")


def test_bootstrap_dry_run_from_s3_and_bad_arguments(tmp_path):
    result = bash(BOOTSTRAP, "--dry-run", "--prefix", tmp_path / "p", f"s3://{BUCKET}/spark-retrieval/")
    assert result.returncode == 0, result.stderr
    assert f"+ aws s3 cp --recursive --only-show-errors s3://{BUCKET}/spark-retrieval {tmp_path}/p/artifacts" in result.stdout
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in result.stdout  # torch's CPU build by default
    assert not (tmp_path / "p").exists()
    for args, message in (([], "usage"), (["--dry-run", "gs://x/y"], "s3:// URI or a local folder"),
                          (["--dry-run", str(tmp_path / "missing")], "not found"), (["--dry-run", str(tmp_path)], "no constraints.txt")):
        failed = bash(BOOTSTRAP, *args)
        assert failed.returncode != 0 and message in failed.stderr, (args, failed.stderr)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("SPARK_RETRIEVAL_TEST_BOOTSTRAP") != "1",
                    reason="installs a full venv (torch, Horovod) into a temp folder: set SPARK_RETRIEVAL_TEST_BOOTSTRAP=1")
def test_bootstrap_installs_a_working_venv(artifacts, tmp_path):
    prefix = tmp_path / "opt"
    # The venv is made from the interpreter this one was made from; torch from the configured indexes; the Horovod
    # wheel from install_horovod.sh's usual cache (built there once by `make setup`).
    env = {**os.environ, "PYTHON": sys._base_executable, "TORCH_INDEX_URL": "",
           "HVD_WHEEL_CACHE": os.path.expanduser("~/.cache/spark-retrieval/wheels")}
    result = bash(BOOTSTRAP, "--prefix", prefix, artifacts, env=env, timeout=1800)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "pyspark 4.3" in result.stdout and "horovod 0.28.1" in result.stdout


# -- EMR: steps.json -----------------------------------------------------------------------------------------


def spark_submit_options():
    """(options that take a value, switches), from spark-submit's own option parser in this pyspark's launcher jar."""
    [jar] = glob.glob(os.path.join(os.path.dirname(pyspark.__file__), "jars", "spark-launcher_*.jar"))
    with zipfile.ZipFile(jar) as archive:
        known = {name.decode() for name in re.findall(rb"--[a-z][a-z-]*", archive.read("org/apache/spark/launcher/SparkSubmitOptionParser.class"))}
    switches = {"--help", "--load-spark-defaults", "--supervise", "--usage-error", "--verbose", "--version"}
    assert switches <= known and {"--master", "--deploy-mode", "--conf", "--name"} <= known
    return known - switches, switches


def parse_spark_submit(args):
    """spark-submit [options] <python file> [app arguments] → ({option: [values]}, app file, app arguments)."""
    with_value, switches = spark_submit_options()
    aliases = {"-c": "--conf", "-h": "--help", "-v": "--verbose"}
    assert args[0] == "spark-submit"
    options, position = {}, 1
    while position < len(args) and args[position].startswith("-"):
        name, _, inline = args[position].partition("=")
        name = aliases.get(name, name)
        if name in switches:
            options.setdefault(name, []).append(True)
            position += 1
            continue
        assert name in with_value, f"spark-submit does not know {name}"
        if inline:
            value, position = inline, position + 1
        else:
            assert position + 1 < len(args) and not args[position + 1].startswith("--"), f"{name} needs a value"
            value, position = args[position + 1], position + 2
        options.setdefault(name, []).append(value)
    assert position < len(args), "no application file"
    return options, args[position], args[position + 1:]


def filled(text):
    return text.replace("${BUCKET}", BUCKET)


def load_steps():
    steps = json.loads((EMR / "steps.json").read_text())
    assert isinstance(steps, list) and steps
    return steps


def test_steps_json_is_in_the_steps_api_format_and_runs_prepare_train_evaluate():
    steps = load_steps()
    jobs = []
    for step in steps:
        assert set(step) == {"Name", "ActionOnFailure", "HadoopJarStep"}
        assert step["ActionOnFailure"] in ("TERMINATE_CLUSTER", "CANCEL_AND_WAIT", "CONTINUE")
        assert set(step["HadoopJarStep"]) == {"Jar", "Args"} and step["HadoopJarStep"]["Jar"] == "command-runner.jar"
        args = step["HadoopJarStep"]["Args"]
        assert all(isinstance(a, str) for a in args)
        _, app, app_args = parse_spark_submit(args)
        jobs.append((Path(app).stem, app_args[app_args.index("--config") + 1]))
    assert [job for job, _ in jobs][:3] == ["prepare", "train", "evaluate"]
    assert [job for job, _ in jobs].count("prepare") == 1
    for position, (job, config) in enumerate(jobs):  # every evaluate right after the train of the same config
        if job == "evaluate":
            assert jobs[position - 1] == ("train", config)
    # ${BUCKET} is the only placeholder (docker/README.md: filled by submit_steps.py --bucket)
    assert set(re.findall(r"\$\{[^}]*\}", (EMR / "steps.json").read_text())) == {"${BUCKET}"}


def test_each_step_parses_as_spark_submit_then_the_job_and_a_valid_config(monkeypatch):
    configs = []
    for step in load_steps():
        args = [filled(a) for a in step["HadoopJarStep"]["Args"]]
        options, app, app_args = parse_spark_submit(args)
        assert options["--master"] == ["yarn"] and options["--deploy-mode"] == ["cluster"]
        conf = dict(c.split("=", 1) for c in options["--conf"])
        assert conf["spark.pyspark.python"] == conf["spark.pyspark.driver.python"] == "/opt/spark-retrieval/venv/bin/python"

        prefix = f"s3://{BUCKET}/spark-retrieval/"
        assert app.startswith(prefix + "jobs/")  # package_artifacts.sh's layout, synced to s3://BUCKET/spark-retrieval/
        job = Path(app).stem
        assert (REPO / app[len(prefix):]).is_file()
        config_uri, overrides, quiet = parse_arguments(job, app_args)  # the job's own parser accepts them
        assert config_uri.startswith(prefix + "jobs/conf/")
        local_config = REPO / config_uri[len(prefix):]
        assert local_config.is_file()

        # The config as the driver sees it: YARN's appMasterEnv fills ${DATA_DIR} / ${OUTPUT}.
        environ = {k[len("spark.yarn.appMasterEnv."):]: v for k, v in conf.items() if k.startswith("spark.yarn.appMasterEnv.")}
        config = load_config(str(local_config), overrides, environ=environ)
        validate(config, job)
        assert config.data.dataset == "ml-1m" and config.data.path == f"s3://{BUCKET}/movielens/ml-1m"
        assert config.output.startswith(f"s3://{BUCKET}/")
        if job == "train" and config.model.name in ("dssm_bce_neg10", "dssm_bce_neg100", "dssm_softmax", "simplex_ccl"):
            working_dir = dict(o.split("=", 1) for o in overrides)["model.params.working_dir"]
            assert working_dir.startswith(f"s3://{BUCKET}/")  # every executor reads the training examples there
        configs.append(config)
    # One prepare serves every model: the same data, split settings and output.
    assert len({(c.data, c.output) for c in configs}) == 1


def test_a_bad_step_would_be_caught():
    """The checks above are not vacuous: an unknown option, a missing value and a bad job argument fail."""
    with pytest.raises(AssertionError, match="does not know --executor-mem"):
        parse_spark_submit(["spark-submit", "--executor-mem", "2g", "job.py"])
    with pytest.raises(AssertionError, match="--master needs a value"):
        parse_spark_submit(["spark-submit", "--master", "--deploy-mode", "cluster", "job.py"])
    with pytest.raises(UserError, match="unrecognized arguments"):
        parse_arguments("train", ["--config", "c.yaml", "--epochs", "3"])


def test_submit_steps_sends_the_filled_steps_through_boto3(tmp_path, monkeypatch):
    from moto import mock_aws

    sys.path.insert(0, str(EMR))
    try:
        import submit_steps
    finally:
        sys.path.remove(str(EMR))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    cli_json = tmp_path / "steps-cli.json"
    with mock_aws():
        import boto3

        client = boto3.client("emr", region_name="us-east-1")
        cluster = client.run_job_flow(
            Name="spark-retrieval", ReleaseLabel="emr-7.0.0", JobFlowRole="EMR_EC2_DefaultRole", ServiceRole="EMR_DefaultRole",
            Instances={"MasterInstanceType": "m5.xlarge", "InstanceCount": 1, "KeepJobFlowAliveWhenNoSteps": True},
        )["JobFlowId"]
        assert submit_steps.main(["--bucket", BUCKET, "--cluster-id", cluster, "--cli-json", str(cli_json)]) == 0
        listed = client.list_steps(ClusterId=cluster)["Steps"][::-1]  # newest first
    expected = json.loads(filled((EMR / "steps.json").read_text()))
    assert [s["Name"] for s in listed] == [s["Name"] for s in expected]
    assert [s["Config"]["Args"] for s in listed] == [s["HadoopJarStep"]["Args"] for s in expected]
    cli = json.loads(cli_json.read_text())
    assert [c["Type"] for c in cli] == ["CUSTOM_JAR"] * len(expected)
    assert [c["Args"] for c in cli] == [s["HadoopJarStep"]["Args"] for s in expected]
    assert submit_steps.main(["--bucket", "Not_A_Bucket"]) == 2
