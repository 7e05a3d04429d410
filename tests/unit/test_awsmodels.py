"""The trimmed EC2 model ssmfab ships: equal to the slice of installed botocore's model, and the one loaded."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import boto3
import botocore.exceptions
import pytest

from ssmfab.aws import AWSContext, aws_context
from ssmfab.awsmodels import MODELS_DIR, TRIMMED, write_trimmed_models
from ssmfab.config import load_settings
from ssmfab.exceptions import ConfigError


def test_shipped_models_match_installed_botocore(tmp_path: Path) -> None:
    fresh = write_trimmed_models(tmp_path)
    assert fresh, "nothing was generated"
    for path in fresh:
        shipped = MODELS_DIR / path.relative_to(tmp_path)
        assert shipped.is_file(), f"{shipped} is missing: run `make models`"
        assert json.loads(shipped.read_text()) == json.loads(path.read_text()), f"{shipped} is stale: run `make models`"


def test_the_ec2_client_carries_only_the_calls_ssmfab_makes() -> None:
    ec2 = aws_context(load_settings()).ec2()
    assert tuple(ec2.meta.service_model.operation_names) == TRIMMED["ec2"]
    assert ec2.can_paginate("describe_instances")
    assert ec2.meta.service_model.api_version == boto3.Session().client("ec2", region_name="us-east-1").meta.service_model.api_version


def test_trimmed_client_reads_instances_like_the_full_one(moto_endpoint: str) -> None:
    full = boto3.client("ec2", region_name="us-east-1", endpoint_url=moto_endpoint)
    image = full.describe_images()["Images"][0]["ImageId"]
    full.run_instances(ImageId=image, MinCount=2, MaxCount=2, TagSpecifications=[
        {"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "trim-check"}]}])  # fmt: skip
    trimmed = aws_context(load_settings(overrides={"aws.endpoint_url": moto_endpoint, "aws.region": "us-east-1"})).ec2()
    query = {"Filters": [{"Name": "tag:Name", "Values": ["trim-check"]}]}
    pages = list(trimmed.get_paginator("describe_instances").paginate(**query))  # type: ignore[arg-type]
    assert pages[0]["Reservations"] == full.describe_instances(**query)["Reservations"]  # type: ignore[arg-type]


def test_direct_loader_loads_what_botocores_loader_loads() -> None:
    import botocore.loaders
    import botocore.session

    from ssmfab.modelloader import direct_loader

    stock = botocore.session.get_session().get_component("data_loader")
    direct = direct_loader(stock.search_paths)
    for service, kind in [("ssm", "service-2"), ("ssm", "paginators-1"), ("s3", "endpoint-rule-set-1"), ("sts", "service-2")]:
        assert direct.load_service_model(service, kind) == stock.load_service_model(service, kind), (service, kind)
    assert direct.load_service_model("ssm", "service-2", "2014-11-06") == stock.load_service_model("ssm", "service-2", "2014-11-06")
    with pytest.raises(botocore.exceptions.UnknownServiceError, match="ssm"):
        direct.load_service_model("no-such-service", "service-2")


def test_sessions_ssmfab_builds_use_the_direct_loader_and_stay_whole() -> None:
    from ssmfab.modelloader import DirectLoader

    context = aws_context(load_settings(overrides={"aws.region": "us-east-1"}))
    loader = context.botocore_session.get_component("data_loader")
    assert isinstance(loader, DirectLoader)
    assert loader.search_paths[0] == str(MODELS_DIR)
    # Clients of other services load as usual, and boto3's own API sits on the same session.
    assert context.client("sts").meta.service_model.service_name == "sts"
    on_top = boto3.Session(botocore_session=context.botocore_session)
    assert "ec2" in on_top.get_available_resources() and "ssm" in on_top.get_available_services()
    assert on_top.region_name == context.region == "us-east-1"


def test_a_context_accepts_a_boto3_session_too() -> None:
    session = boto3.Session(aws_access_key_id="k", aws_secret_access_key="s", region_name="eu-west-1")
    context = AWSContext(session=session, region="eu-west-1", profile=None, endpoint_url=None)
    assert context.botocore_session is session._session
    assert context.ssm().meta.region_name == "eu-west-1"


def test_a_missing_profile_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config").write_text("[default]\nregion = us-east-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(ConfigError, match=r"AWS profile 'nope' not found: check profile= \(--profile on the command line\) or AWS_PROFILE"):
        aws_context(load_settings(overrides={"aws.profile": "nope"}))
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    assert aws_context(load_settings()).region == "us-east-1"  # the default profile's region


def test_a_context_makes_each_client_once_for_all_threads() -> None:
    import threading

    context = aws_context(load_settings(overrides={"aws.region": "us-east-1"}))
    made: list[object] = []
    threads = [threading.Thread(target=lambda: made.append(context.ssm())) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(client) for client in made}) == 1 and made[0] is context.ssm()
    assert context.ec2() is context.ec2() and context.ec2() is not context.ssm()


def test_clients_keep_a_connection_per_parallel_host() -> None:
    # Every fan-out thread calls the shared SSM client (StartSession, TerminateSession) at once: its pool keeps
    # that many connections instead of botocore's 10, beyond which each call opens a connection and drops it.
    wide = aws_context(load_settings(overrides={"aws.region": "us-east-1", "run.parallel": 50}))
    assert wide.ssm().meta.config.max_pool_connections == 50
    assert wide.client("sts").meta.config.max_pool_connections == 50
    narrow = aws_context(load_settings(overrides={"aws.region": "us-east-1", "run.parallel": 4}))
    assert narrow.ssm().meta.config.max_pool_connections == 10  # never fewer than botocore's own default


def test_a_made_client_is_handed_out_while_another_is_being_created() -> None:
    # The audit's caller lookup creates the STS client on its own thread; a host thread asking for the SSM
    # client already made must get it at once, not after STS's creation.
    creating_sts, release_sts = threading.Event(), threading.Event()

    class SlowSession:
        def create_client(self, service: str, **_: Any) -> str:
            if service == "sts":
                creating_sts.set()
                release_sts.wait(20)
            return f"{service}-client"

    context = AWSContext(session=SlowSession(), region="us-east-1", profile=None, endpoint_url=None)  # type: ignore[arg-type]
    assert context.client("ssm") == "ssm-client"
    sts: list[str] = []
    creator = threading.Thread(target=lambda: sts.append(context.client("sts")))
    creator.start()
    assert creating_sts.wait(20)
    answered: list[str] = []
    asker = threading.Thread(target=lambda: answered.append(context.client("ssm")))
    asker.start()
    asker.join(5)
    handed_out_meanwhile = answered == ["ssm-client"] and creator.is_alive()
    release_sts.set()
    creator.join(20)
    asker.join(20)
    assert handed_out_meanwhile
    assert sts == ["sts-client"]
