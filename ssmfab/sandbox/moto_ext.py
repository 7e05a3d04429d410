"""The SSM calls moto lacks, added to moto's SSM responder for the sandbox and for tests.

moto 5 implements EC2 and most of SSM but not Session Manager (StartSession, TerminateSession,
ResumeSession, DescribeSessions) nor DescribeInstanceInformation. ``install()`` adds them to moto's SSM
response class, which serves both ``mock_aws`` and the HTTP server. State lives on moto's per-account,
per-region SSM backend, so moto's reset clears it.

The registry of managed instances (what DescribeInstanceInformation reports, and where a session's
bytes go) is filled through one non-AWS action, ``SandboxPutInstanceInformation``.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .plugin import call_sandbox_ssm

SESSION_DOCUMENTS = {
    "AWS-StartSSHSession",
    "AWS-StartPortForwardingSession",
    "AWS-StartPortForwardingSessionToRemoteHost",
    "AWS-StartInteractiveCommand",
    "SSM-SessionManagerRunShell",
}
INFO_FIELDS = (
    "InstanceId", "PingStatus", "LastPingDateTime", "AgentVersion", "IsLatestVersion", "PlatformType",
    "PlatformName", "PlatformVersion", "ResourceType", "IPAddress", "ComputerName", "Name",
)  # fmt: skip
FILTER_KEYS = {
    "InstanceIds": "InstanceId",
    "PingStatus": "PingStatus",
    "ResourceType": "ResourceType",
    "PlatformTypes": "PlatformType",
    "AgentVersion": "AgentVersion",
}
LEGACY_FILTER_KEYS = {
    "instanceIds": "InstanceIds",
    "pingStatus": "PingStatus",
    "resourceType": "ResourceType",
    "platformTypes": "PlatformTypes",
    "agentVersion": "AgentVersion",
}
ACCOUNT_ID = "123456789012"


@dataclass
class SandboxState:
    """Per-backend registry of managed instances and Session Manager sessions."""

    instances: dict[str, dict[str, Any]] = field(default_factory=dict)
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: EC2 Instance Connect pushes: instance id, OS user, key, time.
    pushed_keys: list[dict[str, Any]] = field(default_factory=list)
    #: Run Command invocations the sandbox executed: (command id, instance id) -> invocation.
    invocations: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)


def _now() -> float:
    return datetime.now(timezone.utc).timestamp()


def state_of(backend: Any) -> SandboxState:
    state = getattr(backend, "_ssmfab_sandbox", None)
    if state is None:
        state = SandboxState()
        backend._ssmfab_sandbox = state
    return state


def put_instance_information(account_id: str, region: str, entries: list[dict[str, Any]]) -> None:
    """Register (or update) managed instances directly in this process's moto backend."""
    from moto.ssm.models import ssm_backends

    _upsert(state_of(ssm_backends[account_id][region]), entries)


def _upsert(state: SandboxState, entries: list[dict[str, Any]]) -> None:
    for entry in entries:
        instance_id = entry["InstanceId"]
        record = dict(state.instances.get(instance_id, {}))
        record.update(entry)
        record.setdefault("PingStatus", "Online")
        record.setdefault("AgentVersion", "3.3.1142.0")
        record.setdefault("IsLatestVersion", True)
        record.setdefault("PlatformType", "Linux")
        record.setdefault("PlatformName", "Amazon Linux")
        record.setdefault("PlatformVersion", "2023")
        record.setdefault("ResourceType", "ManagedInstance" if instance_id.startswith("mi-") else "EC2Instance")
        record["LastPingDateTime"] = _now()
        state.instances[instance_id] = record


def sandbox_put_instance_information(endpoint_url: str, region: str, entries: list[dict[str, Any]]) -> None:
    call_sandbox_ssm(endpoint_url, region, "SandboxPutInstanceInformation", {"InstanceInformationList": entries})


def _tags(record: dict[str, Any]) -> dict[str, str]:
    return {t["Key"]: t.get("Value", "") for t in record.get("Tags", [])}


def _matches(record: dict[str, Any], key: str, values: list[str]) -> bool:
    if key.startswith("tag:"):
        return _tags(record).get(key[4:]) in values
    if key == "tag-key":
        return any(k in values for k in _tags(record))
    if key not in FILTER_KEYS:
        from moto.ssm.exceptions import InvalidFilterKey

        raise InvalidFilterKey(f"The filter key {key} is not valid.")
    return str(record.get(FILTER_KEYS[key])) in values


def _page(items: list[Any], token: str | None, max_results: int) -> tuple[list[Any], str | None]:
    start = int(token or 0)
    end = start + max_results
    return items[start:end], (str(end) if end < len(items) else None)


def _error(code: str, message: str) -> Exception:
    # moto serialises an error with the model of the service its exception class's module belongs to.
    from moto.ssm.exceptions import SSMException

    return SSMException(code, message)


def _describe_instance_information(self: Any) -> Any:
    from moto.core.responses import ActionResult

    state = state_of(self.ssm_backend)
    filters = [(f["Key"], f["Values"]) for f in self._get_param("Filters") or []]
    filters += [(LEGACY_FILTER_KEYS.get(f["key"], f["key"]), f["valueSet"]) for f in self._get_param("InstanceInformationFilterList") or []]
    max_results = int(self._get_param("MaxResults") or 10)
    if not 5 <= max_results <= 50:
        raise _error("ValidationException", "MaxResults must be between 5 and 50.")
    records = [r for _, r in sorted(state.instances.items()) if all(_matches(r, k, v) for k, v in filters)]
    page, token = _page(records, self._get_param("NextToken"), max_results)
    result: dict[str, Any] = {"InstanceInformationList": [{k: r[k] for k in INFO_FIELDS if k in r} for r in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _sandbox_put_instance_information(self: Any) -> str:
    body = json.loads(self.body or "{}")
    _upsert(state_of(self.ssm_backend), list(body.get("InstanceInformationList", [])))
    return "{}"


def _known_document(self: Any, name: str) -> bool:
    if name in SESSION_DOCUMENTS:
        return True
    try:
        self.ssm_backend.get_document(name=name, document_version=None, version_name=None, document_format=None)
        return True
    except Exception:  # noqa: BLE001 - any lookup failure means "no such document"
        return False


def _session_response(session: dict[str, Any]) -> dict[str, Any]:
    return {
        "SessionId": session["SessionId"],
        "TokenValue": session["TokenValue"],
        "StreamUrl": session["StreamUrl"],
    }


def _channels(self: Any) -> Any:
    """The data channel service installed beside these handlers (None in a moto without one, e.g. unit tests)."""
    return getattr(type(self), "_ssmfab_channels", None)


def _needs_channels(self: Any) -> Any:
    channels = _channels(self)
    if channels is None:
        raise _error("ValidationException", "this moto server runs no sandbox data channel service")
    return channels


def _start_session(self: Any) -> Any:
    from moto.core.responses import ActionResult

    state = state_of(self.ssm_backend)
    target = self._get_param("Target")
    document = self._get_param("DocumentName") or "SSM-SessionManagerRunShell"
    record = state.instances.get(target)
    if record is None or record.get("PingStatus") != "Online":
        raise _error("TargetNotConnected", f"{target} is not connected.")
    if record.get("SandboxSessionError"):
        raise _error(record["SandboxSessionError"], f"{target} is not connected.")
    if not _known_document(self, document):
        raise _error("InvalidDocument", f"Document {document} does not exist.")
    session_id = f"sandbox-{secrets.token_hex(9)[:17]}"
    host, _, port = str(record.get("SandboxStreamAddress", "127.0.0.1:0")).rpartition(":")
    session = {
        "SessionId": session_id,
        "Target": target,
        "DocumentName": document,
        "Parameters": self._get_param("Parameters") or {},
        "Reason": self._get_param("Reason") or "",
        "Status": "Connected",
        "StartDate": _now(),
        "Owner": f"arn:aws:sts::{self.current_account}:assumed-role/sandbox/ssmfab",
        "TokenValue": secrets.token_urlsafe(24),
        # Without a data channel service (a bare moto in unit tests) the URL names a port nothing listens on.
        "StreamUrl": f"ws://127.0.0.1:9/v1/data-channel/{session_id}?role=publish_subscribe",
    }
    state.sessions[session_id] = session
    channels = _channels(self)
    if channels is not None:
        channels.open_session(session, (host or "127.0.0.1", int(port or 0)))
    return ActionResult(_session_response(session))


def _terminate_session(self: Any) -> Any:
    from moto.core.responses import ActionResult

    session_id = self._get_param("SessionId")
    session = state_of(self.ssm_backend).sessions.get(session_id)
    if session is not None:
        if session["Status"] == "Connected":
            session["Status"] = "Terminated"
            session["EndDate"] = _now()
        channels = _channels(self)
        if channels is not None:
            channels.terminate(session)
    return ActionResult({"SessionId": session_id})


def _resume_session(self: Any) -> Any:
    from moto.core.responses import ActionResult

    from .ssmmessages import ServiceError

    session_id = self._get_param("SessionId")
    session = state_of(self.ssm_backend).sessions.get(session_id)
    if session is None or session["Status"] != "Connected":
        raise _error("DoesNotExistException", f"Session {session_id} is not active.")
    channels = _channels(self)
    if channels is not None:
        try:
            channels.resume(session)  # a new token, bound to this session
        except ServiceError as exc:
            raise _error(exc.code, str(exc)) from None
    return ActionResult(_session_response(session))


def _sandbox_set_faults(self: Any) -> str:
    """Non-AWS action: flip the data channel's fault switches for an instance or a session (see ssmmessages)."""
    from .ssmmessages import ServiceError

    body = json.loads(self.body or "{}")
    try:
        _needs_channels(self).set_faults(body.get("Target"), body.get("SessionId"), dict(body.get("Faults") or {}), bool(body.get("Clear")))
    except ServiceError as exc:
        raise _error(exc.code, str(exc)) from None
    return "{}"


def _sandbox_set_link(self: Any) -> str:
    """Non-AWS action: the link model every session gets from now on (``Link``: a SSMFAB_SANDBOX_LINK spec)."""
    from .plugin import LinkModel

    body = json.loads(self.body or "{}")
    try:
        model = LinkModel.parse(str(body.get("Link", "")))
    except ValueError as exc:
        raise _error("ValidationException", str(exc)) from None
    _needs_channels(self).set_link(model)
    return json.dumps({"Link": model.spec()})


def _sandbox_wait_for_event(self: Any) -> str:
    """Non-AWS action: block until ``Count`` events named ``Event`` (optionally for ``Target``/``SessionId``) were
    recorded, or ``TimeoutSeconds`` pass (a safety net); answers with the matching events either way."""
    body = json.loads(self.body or "{}")
    found = _needs_channels(self).wait_for(
        str(body["Event"]), body.get("Target"), body.get("SessionId"), int(body.get("Count", 1)), float(body.get("TimeoutSeconds", 60))
    )
    return json.dumps({"Events": found})


def _sandbox_list_events(self: Any) -> str:
    body = json.loads(self.body or "{}")
    return json.dumps({"Events": _needs_channels(self).events(body.get("Event"), body.get("Target"), body.get("SessionId"))})


def _describe_sessions(self: Any) -> Any:
    from moto.core.responses import ActionResult

    wanted = self._get_param("State")
    if wanted not in ("Active", "History"):
        raise _error("ValidationException", "State must be Active or History.")
    sessions = [
        s for s in state_of(self.ssm_backend).sessions.values() if (s["Status"] == "Connected") == (wanted == "Active")
    ]
    for flt in self._get_param("Filters") or []:
        key, value = flt["key"], flt["value"]
        field_name = {"Target": "Target", "Owner": "Owner", "Status": "Status", "SessionId": "SessionId"}.get(key)
        if field_name:
            sessions = [s for s in sessions if s[field_name] == value]
    page, token = _page(sessions, self._get_param("NextToken"), int(self._get_param("MaxResults") or 200))
    shown = ("SessionId", "Target", "Status", "StartDate", "EndDate", "DocumentName", "Owner", "Reason")
    result: dict[str, Any] = {"Sessions": [{k: s[k] for k in shown if k in s} for s in page]}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _list_tags_for_managed_instance(original: Any) -> Any:
    """Hybrid nodes' tags live in the sandbox registry; other resources keep moto's own handling."""

    def list_tags_for_resource(self: Any) -> Any:
        from moto.core.responses import ActionResult

        if self._get_param("ResourceType") == "ManagedInstance":
            record = state_of(self.ssm_backend).instances.get(self._get_param("ResourceId"))
            if record is not None:
                return ActionResult({"TagList": list(record.get("Tags", []))})
        return original(self)

    list_tags_for_resource._ssmfab = True  # type: ignore[attr-defined]
    return list_tags_for_resource


#: EC2 Instance Connect keeps a pushed key for 60 seconds.
PUSHED_KEY_SECONDS = 60


def _send_ssh_public_key(original: Any) -> Any:
    """Record EC2 Instance Connect pushes and, for sandbox hosts, authorise the key in sshd for 60 s
    (OpenSSH's own ``expiry-time`` option enforces the limit)."""

    def send_ssh_public_key(self: Any) -> Any:
        from moto.ssm.models import ssm_backends

        state = state_of(ssm_backends[self.current_account][self.region])
        instance_id, user, key = (self._get_param(k) for k in ("InstanceId", "InstanceOSUser", "SSHPublicKey"))
        record = state.instances.get(instance_id) or {}
        state.pushed_keys.append({"InstanceId": instance_id, "InstanceOSUser": user, "SSHPublicKey": key, "Time": _now()})
        keys_file = record.get("SandboxPushedKeysFile")
        if keys_file:
            expiry = time.strftime("%Y%m%d%H%M%S", time.localtime(time.time() + PUSHED_KEY_SECONDS))
            with open(keys_file, "a") as handle:
                handle.write(f'expiry-time="{expiry}" {key.strip()}\n')
        return original(self)

    send_ssh_public_key._ssmfab = True  # type: ignore[attr-defined]
    return send_ssh_public_key


def _list_pushed_keys(self: Any) -> str:
    """Non-AWS action: the Instance Connect pushes the sandbox recorded (tests count them)."""
    return json.dumps({"PushedKeys": state_of(self.ssm_backend).pushed_keys})


#: Run Command returns at most this much of each stream inline.
INLINE_OUTPUT_LIMIT = 24000
TERMINAL = {"Success", "Failed", "TimedOut", "Cancelled", "Undeliverable", "Terminated"}


@dataclass(frozen=True)
class OutputTargets:
    """Where the agent also writes a command's full output (S3 and/or CloudWatch Logs)."""

    endpoint: str
    region: str
    bucket: str = ""
    prefix: str = ""
    log_group: str = ""
    #: The document's plugin, as it appears in S3 keys and log stream names.
    plugin: str = "runShellScript"


#: The plugin each Run Command document runs (a Windows instance's agent runs AWS-RunPowerShellScript's).
RUN_COMMAND_PLUGINS = {"AWS-RunShellScript": "runShellScript", "AWS-RunPowerShellScript": "runPowerShellScript"}


def _interpreter(plugin: str, script: str) -> list[str]:
    """How the sandbox runs a script: PowerShell's with pwsh when the machine has it; otherwise (the sandbox's
    hosts are Linux) with sh, so tests of Windows targets use commands both shells read alike (echo)."""
    import shutil

    pwsh = shutil.which("pwsh")
    if plugin == "runPowerShellScript" and pwsh:
        return [pwsh, "-NoProfile", "-NonInteractive", "-Command", script]
    return ["/bin/sh", "-c", script]


def _ship_output(where: OutputTargets, command_id: str, instance_id: str, streams: dict[str, str]) -> None:
    """Write full output where the real agent would: S3 keys and CloudWatch streams named as AWS does."""
    import boto3

    options: dict[str, Any] = {
        "endpoint_url": where.endpoint, "region_name": where.region,
        "aws_access_key_id": "testing", "aws_secret_access_key": "testing",
    }  # fmt: skip
    for name, text in streams.items():
        if where.bucket:
            key = "/".join(p for p in (where.prefix.strip("/"), command_id, instance_id, f"aws{where.plugin}", f"0.aws{where.plugin}", name) if p)
            boto3.client("s3", **options).put_object(Bucket=where.bucket, Key=key, Body=text.encode())
        if where.log_group:
            logs = boto3.client("logs", **options)
            stream = f"{command_id}/{instance_id}/aws-{where.plugin}/{name}"
            if not any(g["logGroupName"] == where.log_group for g in logs.describe_log_groups(logGroupNamePrefix=where.log_group)["logGroups"]):
                logs.create_log_group(logGroupName=where.log_group)
            logs.create_log_stream(logGroupName=where.log_group, logStreamName=stream)
            chunks = [text[i : i + 200_000] for i in range(0, len(text), 200_000)]
            if chunks:
                events = [{"timestamp": int(time.time() * 1000), "message": chunk} for chunk in chunks]
                logs.put_log_events(logGroupName=where.log_group, logStreamName=stream, logEvents=events)


def _execute(invocation: dict[str, Any], script: str, home: str, timeout: int, output: OutputTargets | None) -> None:
    """Run a Run Command script the way the agent would, in the sandbox host's home, then record it."""
    import subprocess

    started = _now()
    try:
        done = subprocess.run(
            _interpreter(str(invocation["PluginName"]).removeprefix("aws:"), script), cwd=home, env={**os.environ, "HOME": home},
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
        status = "Success" if done.returncode == 0 else "Failed"
        code, out, err = done.returncode, done.stdout, done.stderr
    except subprocess.TimeoutExpired as exc:
        status, code = "TimedOut", -1
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
    if output is not None:
        _ship_output(output, invocation["CommandId"], invocation["InstanceId"], {"stdout": out, "stderr": err})
    invocation.update(
        Status=status, StatusDetails=status, ResponseCode=code,
        StandardOutputContent=out[:INLINE_OUTPUT_LIMIT], StandardErrorContent=err[:INLINE_OUTPUT_LIMIT],
        ExecutionStartDateTime=started, ExecutionEndDateTime=_now(),
    )  # fmt: skip


def _send_command(original: Any) -> Any:
    """moto records commands but runs nothing (and targets every instance when given InstanceIds); for
    sandbox hosts, run the script for real on exactly the instances asked for."""

    def send_command(self: Any) -> Any:
        import threading

        from moto.ec2.models import ec2_backends

        result = original(self)
        command = result.result["Command"] if hasattr(result, "result") else None
        if command is None:
            return result
        state = state_of(self.ssm_backend)
        wanted = list(self._get_param("InstanceIds") or [])
        targets = self._get_param("Targets") or []
        if targets:
            filters = {t["Key"]: t["Values"] for t in targets}
            for reservation in ec2_backends[self.current_account][self.region].all_reservations(filters=filters):
                wanted += [i.id for i in reservation.instances if i.state == "running"]
        script = "\n".join((self._get_param("Parameters") or {}).get("commands", []))
        timeout = int(self._get_param("TimeoutSeconds") or 3600)
        command_id = command["CommandId"]
        cloudwatch = self._get_param("CloudWatchOutputConfig") or {}
        plugin = RUN_COMMAND_PLUGINS.get(str(command.get("DocumentName")), "runShellScript")
        output = OutputTargets(
            plugin=plugin,
            endpoint=f"http://{self.headers.get('Host')}",
            region=self.region,
            bucket=self._get_param("OutputS3BucketName") or "",
            prefix=self._get_param("OutputS3KeyPrefix") or "",
            log_group=(cloudwatch.get("CloudWatchLogGroupName") or f"/aws/ssm/{command.get('DocumentName')}")
            if cloudwatch.get("CloudWatchOutputEnabled") else "",
        )  # fmt: skip
        shipping = output if output.bucket or output.log_group else None
        command["InstanceIds"] = sorted(set(wanted))
        for instance_id in sorted(set(wanted)):
            record = state.instances.get(instance_id, {})
            invocation = {
                "CommandId": command_id, "InstanceId": instance_id, "DocumentName": command.get("DocumentName"),
                "PluginName": f"aws:{plugin}", "Status": "InProgress", "StatusDetails": "InProgress",
                "ResponseCode": -1, "StandardOutputContent": "", "StandardErrorContent": "",
            }  # fmt: skip
            state.invocations[(command_id, instance_id)] = invocation
            home = record.get("SandboxHome")
            if record.get("PingStatus") != "Online" or not home:
                invocation.update(Status="Undeliverable", StatusDetails="Undeliverable")
                continue
            threading.Thread(target=_execute, args=(invocation, script, home, timeout, shipping), daemon=True).start()
        return result

    send_command._ssmfab = True  # type: ignore[attr-defined]
    return send_command


def _get_command_invocation(original: Any) -> Any:
    def get_command_invocation(self: Any) -> Any:
        from moto.core.responses import ActionResult

        key = (self._get_param("CommandId"), self._get_param("InstanceId"))
        invocation = state_of(self.ssm_backend).invocations.get(key)
        return ActionResult(dict(invocation)) if invocation is not None else original(self)

    get_command_invocation._ssmfab = True  # type: ignore[attr-defined]
    return get_command_invocation


def _list_command_invocations(self: Any) -> Any:
    from moto.core.responses import ActionResult

    command_id = self._get_param("CommandId")
    found = [dict(v) for (cid, _), v in sorted(state_of(self.ssm_backend).invocations.items()) if cid == command_id]
    page, token = _page(found, self._get_param("NextToken"), int(self._get_param("MaxResults") or 50))
    shaped = []
    for invocation in page:
        plugin = {
            "Name": invocation["PluginName"], "Status": invocation["Status"], "ResponseCode": invocation["ResponseCode"],
            "Output": (invocation["StandardOutputContent"] + invocation["StandardErrorContent"])[:2500],
        }  # fmt: skip
        shaped.append({**{k: invocation[k] for k in ("CommandId", "InstanceId", "DocumentName", "Status", "StatusDetails")},
                       "CommandPlugins": [plugin] if self._get_param("Details") else []})  # fmt: skip
    result: dict[str, Any] = {"CommandInvocations": shaped}
    if token:
        result["NextToken"] = token
    return ActionResult(result)


def _remembered_backends(find: Any) -> Any:
    """moto's server finds each request's backend under one lock shared by every request, by listing moto's
    ~150 package folders (a listdir and an isdir each) and then trying its URL patterns, every time. The answer
    for a host never changes, so it is kept (during a 50-host run, two thirds of the server's samples were
    requests waiting for that lock)."""
    remembered: dict[str | None, Any] = {}

    def get_backend_for_host(self: Any, host: str | None) -> Any:
        if host not in remembered:  # called under the dispatcher's lock: one writer at a time
            remembered[host] = find(self, host)
        return remembered[host]

    get_backend_for_host._ssmfab = True  # type: ignore[attr-defined]
    return get_backend_for_host


def install(channels: Any = None) -> None:
    """Add the missing calls to moto's SSM responder, and speed up its server's dispatch (idempotent). With
    ``channels`` (an ``ssmmessages.SSMMessagesService``), sessions get its data channel."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication as Dispatcher
    from moto.ssm.responses import SimpleSystemManagerResponse as Responder

    if not getattr(Dispatcher.get_backend_for_host, "_ssmfab", False):
        setattr(Dispatcher, "get_backend_for_host", _remembered_backends(Dispatcher.get_backend_for_host))

    handlers = {
        "describe_instance_information": _describe_instance_information,
        "sandbox_put_instance_information": _sandbox_put_instance_information,
        "start_session": _start_session,
        "terminate_session": _terminate_session,
        "resume_session": _resume_session,
        "describe_sessions": _describe_sessions,
        "sandbox_set_faults": _sandbox_set_faults,
        "sandbox_set_link": _sandbox_set_link,
        "sandbox_wait_for_event": _sandbox_wait_for_event,
        "sandbox_list_events": _sandbox_list_events,
        "sandbox_list_pushed_keys": _list_pushed_keys,
        "list_command_invocations": _list_command_invocations,
    }
    for name, handler in handlers.items():
        setattr(Responder, name, handler)
    if channels is not None:
        setattr(Responder, "_ssmfab_channels", channels)
    from moto.ec2instanceconnect.responses import Ec2InstanceConnectResponse as Connect

    if not getattr(Connect.send_ssh_public_key, "_ssmfab", False):
        setattr(Connect, "send_ssh_public_key", _send_ssh_public_key(Connect.send_ssh_public_key))
    for name, wrap in (("send_command", _send_command), ("get_command_invocation", _get_command_invocation)):
        if not getattr(getattr(Responder, name), "_ssmfab", False):
            setattr(Responder, name, wrap(getattr(Responder, name)))
    if not getattr(Responder.list_tags_for_resource, "_ssmfab", False):
        setattr(Responder, "list_tags_for_resource", _list_tags_for_managed_instance(Responder.list_tags_for_resource))
