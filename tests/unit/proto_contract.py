"""The wire contract of a .proto file, as a flat comparable mapping.

Compiled with grpcio-tools' protoc, then reduced to what matters on the
wire and to generated clients: package, services and methods (types and
streaming), messages with each field's name, number, type, label, type name
and oneof, nested messages, enums and their values. Comments and layout do
not count.
"""

import tempfile
from pathlib import Path

from google.protobuf import descriptor_pb2
from grpc_tools import protoc

Contract = dict[str, str]


def compile_proto(path: Path) -> descriptor_pb2.FileDescriptorProto:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        code = protoc.main(["protoc", f"-I{path.parent}", f"--descriptor_set_out={out}", str(path)])
        if code != 0:
            raise RuntimeError(f"protoc failed on {path} (exit {code})")
        fds = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())
    return fds.file[0]


def _enum(prefix: str, e: descriptor_pb2.EnumDescriptorProto, out: Contract) -> None:
    out[f"enum {prefix}{e.name}"] = "declared"
    for v in e.value:
        out[f"enum {prefix}{e.name}.{v.name}"] = str(v.number)


def _message(prefix: str, m: descriptor_pb2.DescriptorProto, out: Contract) -> None:
    name = f"{prefix}{m.name}"
    out[f"message {name}"] = "map entry" if m.options.map_entry else "declared"
    for f in m.field:
        oneof = ""
        if f.HasField("oneof_index") and not f.proto3_optional:
            oneof = f" oneof={m.oneof_decl[f.oneof_index].name}"
        kind = descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)
        label = descriptor_pb2.FieldDescriptorProto.Label.Name(f.label)
        optional = " optional" if f.proto3_optional else ""
        out[f"field {name}.{f.name}"] = f"{f.number} {label} {kind} {f.type_name}{oneof}{optional}".strip()
    for nested in m.nested_type:
        _message(f"{name}.", nested, out)
    for e in m.enum_type:
        _enum(f"{name}.", e, out)


def contract(path: Path) -> Contract:
    f = compile_proto(path)
    out: Contract = {"package": f.package, "syntax": f.syntax}
    for s in f.service:
        out[f"service {s.name}"] = "declared"
        for m in s.method:
            out[f"rpc {s.name}.{m.name}"] = (
                f"{'stream ' if m.client_streaming else ''}{m.input_type} -> "
                f"{'stream ' if m.server_streaming else ''}{m.output_type}"
            )
    for msg in f.message_type:
        _message("", msg, out)
    for e in f.enum_type:
        _enum("", e, out)
    return out


def differences(ours: Contract, reference: Contract) -> list[str]:
    diffs = []
    for key in sorted(set(ours) | set(reference)):
        a, b = ours.get(key), reference.get(key)
        if a != b:
            diffs.append(f"{key}: ours={a!r} reference={b!r}")
    return diffs
