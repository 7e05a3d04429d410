"""``run --via run-command``: fan-out done on AWS's side with SSM Run Command: AWS-RunShellScript, and
AWS-RunPowerShellScript for instances whose platform is Windows (a mixed fleet gets one command per document).

No tunnel, no SSH: SendCommand with MaxConcurrency/MaxErrors from the same flags as the SSH path, polled
with backoff until every invocation ends or the timeout passes, then reported through the same FleetResult.
A tag-only selection goes out as Targets (no 50-id limit); ids go in chunks of 50, SendCommand's maximum.
Run Command returns at most 24,000 characters of each stream inline; results say when that cut them.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .aws import aws_errors
from .client import Client
from .exceptions import ConfigError
from .fleet import FleetResult, HostResult, parse_count, unreachable_results
from .targets import Selector, Target

DOCUMENT = "AWS-RunShellScript"
#: What Windows instances run the command with (PowerShell, not sh).
POWERSHELL_DOCUMENT = "AWS-RunPowerShellScript"
MAX_IDS = 50
INLINE_LIMIT = 24000
#: Where each document's plugin writes full output: CloudWatch log group, and the plugin's name in S3 keys
#: and log stream names (as the agent names them).
OUTPUT_NAMES = {
    DOCUMENT: ("/aws/ssm/AWS-RunShellScript", "runShellScript"),
    POWERSHELL_DOCUMENT: ("/aws/ssm/AWS-RunPowerShellScript", "runPowerShellScript"),
}
LOG_GROUP = OUTPUT_NAMES[DOCUMENT][0]
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated", "DeliveryTimedOut", "ExecutionTimedOut"}


@dataclass
class CommandOutput:
    stdout: str
    stderr: str
    exited: int
    status: str
    #: The document that ran it (AWS-RunShellScript, or AWS-RunPowerShellScript on Windows).
    document: str = DOCUMENT

    @property
    def truncated(self) -> bool:
        return len(self.stdout) >= INLINE_LIMIT or len(self.stderr) >= INLINE_LIMIT


class FullOutput:
    """A command's complete output from where Run Command also wrote it: S3 first, else CloudWatch Logs."""

    def __init__(self, client: Client, bucket: str | None, cloudwatch: bool) -> None:
        self.client = client
        self.bucket = bucket
        self.cloudwatch = cloudwatch

    def read(self, invocation: dict[str, Any], stream: str) -> str:
        command_id, instance_id = invocation["CommandId"], invocation["InstanceId"]
        log_group, plugin = OUTPUT_NAMES.get(str(invocation.get("DocumentName")), OUTPUT_NAMES[DOCUMENT])
        with aws_errors(f"reading the full {stream} of {instance_id}"):
            if self.bucket:
                key = f"ssmfab/{command_id}/{instance_id}/aws{plugin}/0.aws{plugin}/{stream}"
                body = self.client.aws.client("s3").get_object(Bucket=self.bucket, Key=key)["Body"].read()
                return str(body.decode(errors="replace"))
            logs = self.client.aws.client("logs")
            name = f"{command_id}/{instance_id}/aws-{plugin}/{stream}"
            events = logs.get_log_events(logGroupName=log_group, logStreamName=name, startFromHead=True)["events"]
            return "".join(str(event["message"]) for event in events)


def _chunks(items: Sequence[str], size: int) -> list[list[str]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def document_for(target: Target) -> str:
    return POWERSHELL_DOCUMENT if target.platform.lower() == "windows" else DOCUMENT


def send_requests(selector: Selector, targets: Sequence[Target]) -> list[dict[str, Any]]:
    """How to address the targets, with the document each runs: by tag when the selection is tags only and of
    one platform, else by ids in chunks of 50, one command per document."""
    by_document: dict[str, list[str]] = {}
    for target in targets:
        by_document.setdefault(document_for(target), []).append(target.id)
    tags_only = selector.tags and not (selector.ids or selector.names or selector.asgs or selector.ips or selector.dns_names)
    if tags_only and len(by_document) == 1:
        [document] = by_document
        return [{"DocumentName": document, "Targets": [{"Key": f"tag:{t.key}", "Values": list(t.values)} for t in selector.tags]}]
    return [
        {"DocumentName": document, "InstanceIds": chunk}
        for document, ids in by_document.items()
        for chunk in _chunks(ids, MAX_IDS)
    ]


def run_via_ssm(
    client: Client,
    selector: Selector,
    targets: Sequence[Target],
    command: str,
    *,
    parallel: int,
    max_failures: str | None,
    timeout: float | None,
    output_bucket: str | None = None,
    cloudwatch_output: bool = False,
    sleep: Callable[[float], Any] = time.sleep,
) -> FleetResult[CommandOutput]:
    ssm = client.aws.ssm()
    errors = parse_count(max_failures, len(targets), "max-failures", round_up=False)
    common: dict[str, Any] = {
        "Parameters": {"commands": [command]},
        "MaxConcurrency": str(parallel),
        "MaxErrors": "100%" if errors is None else str(errors),
        # Run Command has no Reason; its Comment (100 characters, shown in the console) carries it instead.
        "Comment": (client.settings.tunnel.reason or f"ssmfab run: {command}")[:100],
    }
    if timeout is not None:
        if timeout < 30:
            raise ConfigError("--timeout with --via run-command must be at least 30 seconds (Run Command's minimum)")
        common["TimeoutSeconds"] = int(timeout)
    if output_bucket:
        common.update(OutputS3BucketName=output_bucket, OutputS3KeyPrefix="ssmfab")
    started = time.monotonic()
    command_ids = []
    with aws_errors("sending the command with SSM Run Command"):
        for request in send_requests(selector, targets):
            if cloudwatch_output:
                log_group = OUTPUT_NAMES[request["DocumentName"]][0]
                request["CloudWatchOutputConfig"] = {"CloudWatchOutputEnabled": True, "CloudWatchLogGroupName": log_group}
            command_ids.append(ssm.send_command(**common, **request)["Command"]["CommandId"])
    invocations = _poll(ssm, command_ids, deadline=None if timeout is None else started + timeout + 60, sleep=sleep)
    ended = time.monotonic()
    results = []
    for target in targets:
        invocation = invocations.get(target.id)
        result: HostResult[CommandOutput] = HostResult(target, started=started, ended=ended)
        if invocation is None:
            result.error = f"{target.label}: Run Command never reached it (not in the command's targets, or still pending)"
        else:
            output = CommandOutput(
                stdout=str(invocation.get("StandardOutputContent", "")),
                stderr=str(invocation.get("StandardErrorContent", "")),
                exited=int(invocation.get("ResponseCode", -1)),
                status=str(invocation.get("Status", "")),
                document=document_for(target),
            )
            if output.truncated and (output_bucket or cloudwatch_output):
                full = FullOutput(client, output_bucket, cloudwatch_output)
                output.stdout = full.read(invocation, "stdout") or output.stdout
                output.stderr = full.read(invocation, "stderr") or output.stderr
            result.value, result.exit_code = output, output.exited
            cut = (
                " (output cut at 24,000 characters by Run Command: pass --output-s3-bucket or --cloudwatch-output for all of it)"
                if output.truncated
                else ""
            )
            if output.status != "Success":
                result.error = f"{target.label}: `{command}` {output.status.lower()}, exit {output.exited} (Run Command){cut}"
        results.append(result)
    return FleetResult(results + unreachable_results(targets))


def _poll(ssm: Any, command_ids: list[str], *, deadline: float | None, sleep: Callable[[float], Any]) -> dict[str, dict[str, Any]]:
    """Every instance's invocation, once all are terminal (or the deadline passed), with full output."""
    delay = 0.5
    while True:
        with aws_errors("polling Run Command"):
            listed = [
                item
                for command_id in command_ids
                for page in ssm.get_paginator("list_command_invocations").paginate(CommandId=command_id)
                for item in page["CommandInvocations"]
            ]
        if listed and all(i["Status"] in TERMINAL for i in listed) or (deadline is not None and time.monotonic() > deadline):
            break
        sleep(delay)
        delay = min(delay * 2, 5.0)
    found = {}
    with aws_errors("reading Run Command results"):
        for item in listed:
            found[item["InstanceId"]] = ssm.get_command_invocation(CommandId=item["CommandId"], InstanceId=item["InstanceId"])
    return found


def print_outputs(result: FleetResult[CommandOutput], *, full_output: bool) -> None:
    """Each host's output, prefixed like the SSH path's live output (Run Command returns it at the end)."""
    for host in result.results:
        if host.value is None:
            continue
        prefix = f"[{host.target.name or host.target.id}] "
        print("".join(f"{prefix}{line}\n" for line in host.value.stdout.splitlines()), end="")
        print("".join(f"{prefix}{line}\n" for line in host.value.stderr.splitlines()), end="", file=sys.stderr)
        if host.value.truncated and not full_output:
            print(f"{prefix}(output cut at 24,000 characters by Run Command; pass --output-s3-bucket or "
                  "--cloudwatch-output)", file=sys.stderr)  # fmt: skip
