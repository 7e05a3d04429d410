"""``ssmfab doctor``: every prerequisite of SSH over Session Manager, checked one by one, each with its fix."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from .aws import aws_errors
from .client import Client
from .exceptions import SSMFabError
from .targets import Selection
from .tunnel import MIN_PLUGIN_VERSION, PLUGIN_INSTALL_HINT, parse_version, plugin_version

#: The first SSM agent release that supports SSH sessions.
MIN_AGENT_VERSION = (2, 3, 672, 0)


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status.upper():4}  {self.name}: {self.detail}"
        wanted = self.fix and self.status == "fail" and self.fix not in self.detail
        return f"{text} -> fix: {self.fix}" if wanted else text


def _version_text(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


def _attempt(name: str, probe: Callable[[], str], fix: str) -> Check:
    try:
        return Check(name, "pass", probe())
    except SSMFabError as exc:
        return Check(name, "fail", str(exc), fix)


def check_aws_cli(client: Client) -> Check:
    cli = client.settings.tunnel.aws_cli
    path = shutil.which(cli)
    if path is None:
        return Check("aws CLI", "fail", f"{cli} not found on PATH", "install the AWS CLI, or use --tunnel plugin")
    done = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60, check=False)
    return Check("aws CLI", "pass", (done.stdout or done.stderr).strip().split(" ")[0] or path)


def check_plugin(client: Client) -> Check:
    def probe() -> str:
        version = plugin_version(client.settings.tunnel.plugin)
        return f"{_version_text(version)} (>= {_version_text(MIN_PLUGIN_VERSION)})"

    return _attempt("session-manager-plugin", probe, PLUGIN_INSTALL_HINT)


def caller_arn(client: Client) -> str:
    with aws_errors("checking the credentials (sts:GetCallerIdentity)"):
        return str(client.aws.client("sts").get_caller_identity()["Arn"])


def check_document(client: Client) -> Check:
    document = client.settings.tunnel.document

    def probe() -> str:
        with aws_errors(f"reading the {document} document"):
            found = client.aws.ssm().describe_document(Name=document)["Document"]
        return f"{document} is {found.get('Status', 'readable')}"

    return _attempt("SSH session document", probe, f"allow ssm:DescribeDocument on {document}, or check the region")


def target_checks(selection: Selection) -> Iterator[Check]:
    for skipped in selection.skipped:
        yield Check(skipped.target.label, "fail", skipped.reason, "start it, or fix its SSM agent / instance profile")
    for target in selection.targets:
        version = parse_version(target.agent_version)
        if version and version < MIN_AGENT_VERSION:
            yield Check(
                target.label, "fail",
                f"SSM agent {target.agent_version} is too old for SSH sessions (>= {_version_text(MIN_AGENT_VERSION)})",
                "update the agent (AWS-UpdateSSMAgent)",
            )  # fmt: skip
        else:
            yield Check(target.label, "pass", f"SSM agent {target.ping_status}, version {target.agent_version or '?'}")


def permission_checks(client: Client, arn: str, selection: Selection) -> Iterator[Check]:
    """Ask IAM whether the caller may start sessions on each target; skipped where simulation is denied."""
    if not selection.targets:
        return
    try:
        iam = client.aws.client("iam")
        with aws_errors("simulating the caller's IAM policy"):
            for target in selection.targets:
                account = arn.split(":")[4]
                resource = f"arn:aws:ec2:{client.aws.region}:{account}:instance/{target.id}"
                result = iam.simulate_principal_policy(
                    PolicySourceArn=arn, ActionNames=["ssm:StartSession"], ResourceArns=[resource]
                )["EvaluationResults"][0]
                decision = str(result["EvalDecision"])
                ok = decision == "allowed"
                yield Check(f"{target.label} permission", "pass" if ok else "fail", f"ssm:StartSession is {decision}",
                            "" if ok else "grant it (see `ssmfab iam-policy`)")  # fmt: skip
    except SSMFabError as exc:
        reason = "denied to this caller" if "access denied" in str(exc) else "not available here"
        yield Check("IAM permission simulation", "skip", f"iam:SimulatePrincipalPolicy is {reason}")


def run_checks(client: Client, selection: Selection | None) -> list[Check]:
    checks: list[Check] = []
    if client.settings.tunnel.mode == "cli":
        checks.append(check_aws_cli(client))
    checks.append(check_plugin(client))
    try:
        checks.append(Check("AWS region", "pass", client.aws.region))
    except SSMFabError as exc:
        return [*checks, Check("AWS region", "fail", str(exc), "pass --region or set AWS_REGION")]
    try:
        arn = caller_arn(client)
    except SSMFabError as exc:
        return [*checks, Check("AWS credentials", "fail", str(exc), "run `aws sso login` or `aws configure`")]
    checks.append(Check("AWS credentials", "pass", arn))
    checks.append(check_document(client))
    if selection is not None:
        checks += target_checks(selection)
        checks += permission_checks(client, arn, selection)
    return checks
