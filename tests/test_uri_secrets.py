"""Credentials inside URIs (presigned URLs, SAS tokens, ``user:password@``) are refused at every
key shardtune records or prints, with one line naming the key and never the value; the plain
Azure ``container@account`` form and an endpoint in the query stay accepted.

The secrets below are the session's planted values (tests/conftest.py), so the suite's last
test (tests/test_security.py) would also find one that reached any file. Config-level only:
nothing here starts Ray or trains.
"""

from __future__ import annotations

import os

import pytest

from data.errors import ConfigError
from tests.conftest import PLANTED


def _planted(name: str) -> str:
    return os.environ.get(name) or PLANTED[name]


AWS, AZURE, HF = (_planted(n) for n in ("AWS_SECRET_ACCESS_KEY", "AZURE_STORAGE_KEY",
                                        "HF_TOKEN"))
# (a URI with a credential, the part of the message that names the credential's kind)
FORMS = {
    "user:password": (f"s3://AKIAX:{AWS}@bucket/runs", "user:password"),
    "key before @": (f"s3://{AWS}@bucket/runs", "user name or key before '@'"),
    "abfs account key": (f"abfs://container:{AZURE}@account.dfs.core.windows.net/runs",
                         "user:password"),
    "abfs client_secret": ("abfs://container@account.dfs.core.windows.net/runs?client_id=app"
                           f"&tenant_id=t&client_secret={AZURE}", "'client_secret'"),
    "azure SAS token": ("https://account.blob.core.windows.net/c/train.jsonl?sv=2022-11-02"
                        f"&ss=b&srt=o&sp=r&se=2030-01-01T00:00:00Z&spr=https&sig={AZURE}",
                        "'sig'"),
    "S3 presigned v4": ("https://bucket.s3.amazonaws.com/train.jsonl?X-Amz-Algorithm=AWS4-HMAC-"
                        "SHA256&X-Amz-Credential=AKIAX%2F20300101%2Fus-east-1%2Fs3%2Faws4_"
                        f"request&X-Amz-Date=20300101T000000Z&X-Amz-Signature={AWS}",
                        "'X-Amz-Credential'"),
    "S3 presigned v2": (f"https://bucket.s3.amazonaws.com/t.jsonl?Expires=1&Signature={AWS}",
                        "'Signature'"),
    "GCS signed URL": ("https://storage.googleapis.com/b/t.jsonl?X-Goog-Algorithm=GOOG4-RSA-"
                       f"SHA256&X-Goog-Signature={AWS}", "'X-Goog-Signature'"),
    "token": (f"https://huggingface.co/datasets/x/resolve/main/t.jsonl?token={HF}", "'token'"),
    "nested endpoint": (f"s3://bucket/runs?endpoint_override=http://minio:{AWS}@minio:9000",
                        "in query parameter 'endpoint_override'"),
}
KEYS = ("data.path", "data.validation_path", "data.test_path", "paths.store", "submit.storage")
ACCEPTED = ["s3://bucket/runs", "s3://bucket/runs?endpoint_override=http://127.0.0.1:9000",
            "abfs://container@account.dfs.core.windows.net/runs",
            "abfss://container@account.dfs.core.windows.net/runs?client_id=app&tenant_id=t",
            "https://example.org/data/train.jsonl", "/data/tickets/", "data.json#train"]


@pytest.mark.parametrize("form", FORMS)
def test_every_credential_form_is_refused_by_name_never_by_value(form):
    from trainers.storage import _shown, check_uri, credential, refuse_credentials

    uri, kind = FORMS[form]
    assert kind in credential(uri)
    for key in KEYS:
        with pytest.raises(ConfigError) as err:
            refuse_credentials(uri, key)
        message = str(err.value)
        assert message.startswith(f"config key '{key}': credentials in the URI are refused")
        assert "environment" in message and "\n" not in message
        assert not any(s in message for s in (AWS, AZURE, HF))
    with pytest.raises(ConfigError):
        check_uri(uri, "paths.store")
    assert not any(s in _shown(uri) for s in (AWS, AZURE, HF))  # what messages show of a URI


@pytest.mark.parametrize("uri", ACCEPTED)
def test_plain_uris_and_the_azure_container_at_account_form_are_accepted(uri):
    from trainers.storage import check_uri, credential

    assert credential(uri) is None
    if uri.startswith(("s3://", "abfs")):
        assert check_uri(uri, "paths.store") == uri


def _argv(key: str, uri: str, tmp_path) -> list[str]:
    quoted = f"{key}='{uri}'"
    if key == "submit.storage":  # the KubeRay manifest would hold it
        return ["submit", "--k8s", "--render", str(tmp_path / "job.yaml"),
                "submit.k8s.image=repo/st:0.1", quoted, "train"]
    return ["train", f"paths.root={tmp_path}", quoted]


# every key through the command line (every form through every key above)
WIRED = list(zip(KEYS, ["S3 presigned v4", "azure SAS token", "GCS signed URL",
                        "abfs account key", "nested endpoint"], strict=True))


@pytest.mark.parametrize("key, form", WIRED)
def test_a_command_given_a_uri_with_a_credential_writes_and_prints_nothing_of_it(
        key, form, tmp_path, capsys):
    """Refused before anything is written: no config.json, run_meta.json, W&B config or
    manifest exists to hold the secret, and the one error line names the key only."""
    from shardtune.cli import main

    uri = FORMS[form][0]
    assert main(_argv(key, uri, tmp_path)) == 2
    out = capsys.readouterr()
    assert out.err.startswith(f"error: config key '{key}': credentials in the URI are refused")
    assert len(out.err.strip().splitlines()) == 1
    assert not any(s in out.out + out.err for s in (AWS, AZURE, HF))
    assert not list(tmp_path.rglob("*"))  # nothing written at all


def test_a_submitted_override_with_a_credential_never_reaches_the_entrypoint(tmp_path, capsys):
    """Any override goes into the job's entrypoint (Ray's job table): refused by its key before
    the job server is contacted (this address would fail with 'cannot reach')."""
    from shardtune.cli import main

    argv = ["submit", "--address", "http://127.0.0.1:9", "evaluate",
            f"run='{FORMS['S3 presigned v4'][0]}'", f"submit.storage={tmp_path}"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'run': credentials in the URI are refused") and \
        AWS not in err


def test_distill_refuses_a_credential_in_its_transfer_prompts_uri(tmp_path, capsys):
    """distill.transfer_path lands in the student's config.json and the report."""
    from shardtune.cli import main

    quoted = f"distill.transfer_path='{FORMS['S3 presigned v4'][0]}'"
    assert main(["distill", "teacher=runs/x", f"paths.root={tmp_path}", quoted]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config key 'distill.transfer_path': credentials in the URI "
                          "are refused") and AWS not in err
    assert not list(tmp_path.rglob("*"))


def test_evaluate_on_other_data_refuses_a_credential_in_a_data_key():
    """``evaluate run=… data.test_path=<presigned>`` changes the run's own data config
    (evaluation/outputs.py), which goes into metrics.json."""
    from data.config import DataConfig
    from evaluation.outputs import data_config

    own = DataConfig(path=["/data/train.jsonl"])
    with pytest.raises(ConfigError, match=r"^config key 'data\.test_path': credentials in the URI"):
        data_config(own, None, [f"data.test_path='{FORMS['azure SAS token'][0]}'"])
    assert data_config(own, None, ["data.test_path=/data/new.jsonl"]).test_path == [
        "/data/new.jsonl"]


def test_a_run_uri_with_a_credential_is_refused_before_any_fetch(tmp_path, monkeypatch):
    """``distill teacher=``, ``compare``, ``card run=`` … fetch a run by URI (local_run)."""
    from trainers.storage import local_run

    monkeypatch.setenv("SHARDTUNE_CACHE", str(tmp_path))
    with pytest.raises(ConfigError, match="^config key 'distill.teacher': credentials in the URI"):
        local_run(FORMS["token"][0].replace("https://huggingface.co", "s3://b"),
                  "distill.teacher")
    assert not list(tmp_path.rglob("*"))


def test_the_azure_container_at_account_form_is_accepted_by_every_key(tmp_path):
    import yaml

    from shardtune.cli import main
    from shardtune.compose import compose, to_run_config

    uri = "abfs://container@account.dfs.core.windows.net/shardtune"
    run = to_run_config(compose([f"paths.store={uri}", f"data.path={uri}/train.jsonl",
                                 f"data.test_path={uri}/test.jsonl"]))
    assert run.paths.store == uri and run.data.path == [f"{uri}/train.jsonl"]
    out = tmp_path / "job.yaml"
    assert main(["submit", "--k8s", "--render", str(out), "submit.k8s.image=repo/st:0.1",
                 f"submit.storage={uri}", "train"]) == 0
    assert yaml.safe_load(out.read_text())["spec"]["entrypoint"].endswith(
        f"paths.store='\"'\"'{uri}'\"'\"''")
