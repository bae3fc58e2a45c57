"""The fleet: the Kubernetes CronJob and the systemd template units of `pipelines/fleet/`,
rendered for three provinces as an operator would, checked for their commands, schedules and
secrets, and the rendered commands run against the demo source into one shared root."""

import configparser
import os
import pathlib
import re
import shlex
import string
import subprocess
import tempfile

import yaml

from conftest import PII_KEY, ROOT, TOKEN, binary, demo_source

FLEET = ROOT / "pipelines" / "fleet"
PROVINCES = ["01", "46", "79"]


def render_cronjob(province):
    """`PROVINCE=… SCHEDULE=… envsubst < cronjob.yaml`, with the README's staggered schedule."""
    schedule = f"{int(province) % 60} 1 * * *"
    text = string.Template((FLEET / "cronjob.yaml").read_text()).substitute(PROVINCE=province, SCHEDULE=schedule)
    return yaml.safe_load(text), schedule


def render_unit(name, province):
    """The unit `name` (motcua@.service, motcua@.timer) as systemd instantiates it for `province`."""
    p = configparser.ConfigParser(interpolation=None, strict=False)
    p.optionxform = str
    p.read_string((FLEET / name).read_text().replace("%i", province))
    return p


def test_the_cronjob_runs_each_province_from_its_pipeline_file_with_secrets_from_the_environment():
    names, schedules = set(), set()
    for province in PROVINCES:
        job, schedule = render_cronjob(province)
        assert job["kind"] == "CronJob" and job["apiVersion"] == "batch/v1"
        names.add(job["metadata"]["name"])
        spec = job["spec"]
        assert spec["schedule"] == schedule and spec["timeZone"] == "Asia/Ho_Chi_Minh"
        schedules.add(spec["schedule"])
        assert spec["concurrencyPolicy"] == "Forbid"
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never"
        [c] = pod["containers"]
        assert c["command"] == ["motcua", "run", "--pipeline", f"/etc/motcua/{province}.toml", "--log-format", "json"]
        env = {e["name"]: e for e in c["env"]}
        for secret in ["MOTCUA_SOURCE_TOKEN", "MOTCUA_PII_KEY", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]:
            assert "value" not in env[secret] and "secretKeyRef" in env[secret]["valueFrom"], secret
        assert env["MOTCUA_SOURCE_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == f"motcua-{province}"
        assert pod["volumes"][0]["configMap"]["name"] == "motcua-pipelines"
        assert c["volumeMounts"][0]["mountPath"] == "/etc/motcua"
    assert len(names) == 3 and len(schedules) == 3, "one job per province, each at its own minute"


def test_the_systemd_template_runs_each_province_nightly():
    for province in PROVINCES:
        service, timer = render_unit("motcua@.service", province), render_unit("motcua@.timer", province)
        assert service["Service"]["ExecStart"] == (
            f"/usr/local/bin/motcua run --pipeline /etc/motcua/{province}.toml --log-format json")
        assert service["Service"]["EnvironmentFile"] == f"/etc/motcua/{province}.env"
        assert service["Service"]["Type"] == "oneshot"
        assert timer["Timer"]["OnCalendar"] == "*-*-* 01:00:00 Asia/Ho_Chi_Minh"
        assert timer["Timer"]["Unit"] == f"motcua@{province}.service"
        assert timer["Timer"]["Persistent"] == "true"
        assert timer["Install"]["WantedBy"] == "timers.target"


def test_the_rendered_commands_run_three_provinces_into_one_root():
    """Each province's command as the units render it, with the fleet's pipeline file (its
    province, root and source pointed here), run as cron would: no --period."""
    with tempfile.TemporaryDirectory(prefix="motcua-fleet-") as scratch:
        work = pathlib.Path(scratch)
        root = work / "root"
        example = (FLEET / "46.toml").read_text()
        env = dict(os.environ, MOTCUA_SOURCE_TOKEN=TOKEN, MOTCUA_PII_KEY=PII_KEY)
        with demo_source("--chaos", "off", "--scale", "0.02") as url:
            for province in PROVINCES:
                pipeline = example.replace('province = "46"', f'province = "{province}"')
                pipeline = re.sub(r'^output = .*$', f'output = "{root}"', pipeline, flags=re.M)
                pipeline = re.sub(r'^url = .*$', f'url = "{url}"', pipeline, flags=re.M)
                assert pipeline.count(f'"{province}"') == 1 and str(root) in pipeline and url in pipeline
                (work / f"{province}.toml").write_text(pipeline)
                job, _ = render_cronjob(province)
                k8s = job["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
                systemd = shlex.split(render_unit("motcua@.service", province)["Service"]["ExecStart"])
                assert k8s[1:] == systemd[1:], "both run the same command"
                cmd = [binary()] + [str(work / f"{province}.toml") if a == f"/etc/motcua/{province}.toml" else a
                                    for a in systemd[1:]]
                run = subprocess.run(cmd, env=env, capture_output=True, text=True)
                assert run.returncode == 0, run.stderr
        for province in PROVINCES:
            published = sorted(p.name for p in (root / "kpi" / "cases_by_level" / f"province={province}").iterdir())
            assert len(published) == 2, published  # the current quarter and the previous one, as cron runs it
            assert (root / "_state" / f"province={province}" / "cursor.json").exists()
