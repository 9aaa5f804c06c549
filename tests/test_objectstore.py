"""The test object store itself: a real SeaweedFS S3 gateway with auth and TLS."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, SSLError

from tests.objectstore import S3Server, s3_server

if TYPE_CHECKING:
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    with s3_server(tmp_path_factory.mktemp("objectstore")) as server:
        yield server


def _error_code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response.get("Error", {}).get("Code"))


def test_put_get_round_trip_with_the_right_credentials(s3: S3Server) -> None:
    s3.create_bucket("round-trip")
    payload = bytes(range(256)) * 64
    s3.put("round-trip", "dir/object.bin", payload)
    assert s3.get("round-trip", "dir/object.bin") == payload
    assert s3.list_keys("round-trip", "dir/") == ["dir/object.bin"]
    assert s3.list_keys("round-trip", "other/") == []


def test_multipart_upload_assembles_the_parts(s3: S3Server) -> None:
    s3.create_bucket("multipart")
    client = s3.client()
    parts = [b"a" * (5 * 1024 * 1024), b"tail"]  # S3's smallest non-last part is 5 MiB
    upload = client.create_multipart_upload(Bucket="multipart", Key="big")
    done: list[CompletedPartTypeDef] = [
        {
            "PartNumber": number,
            "ETag": client.upload_part(
                Bucket="multipart",
                Key="big",
                UploadId=upload["UploadId"],
                PartNumber=number,
                Body=body,
            )["ETag"],
        }
        for number, body in enumerate(parts, start=1)
    ]
    client.complete_multipart_upload(
        Bucket="multipart",
        Key="big",
        UploadId=upload["UploadId"],
        MultipartUpload={"Parts": done},
    )
    assert s3.get("multipart", "big") == b"".join(parts)


def test_corrupt_changes_the_bytes_but_not_the_length(s3: S3Server) -> None:
    s3.create_bucket("corrupt")
    s3.put("corrupt", "k", b"original bytes")
    s3.corrupt("corrupt", "k")
    changed = s3.get("corrupt", "k")
    assert changed != b"original bytes"
    assert len(changed) == len(b"original bytes")


def test_a_wrong_secret_key_is_refused(s3: S3Server) -> None:
    s3.create_bucket("refused")
    s3.put("refused", "k", b"secret")
    intruder = s3.client(secret_key="not-" + s3.secret_key)
    with pytest.raises(ClientError) as exc:
        intruder.get_object(Bucket="refused", Key="k")
    assert _error_code(exc) == "SignatureDoesNotMatch"


def test_an_unknown_access_key_is_refused(s3: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        s3.client(access_key="AKNOBODY").list_buckets()
    assert _error_code(exc) == "InvalidAccessKeyId"


def test_a_missing_bucket_gives_no_such_bucket(s3: S3Server) -> None:
    with pytest.raises(ClientError) as exc:
        s3.client().get_object(Bucket="no-such-bucket", Key="k")
    assert _error_code(exc) == "NoSuchBucket"


def test_tls_verifies_with_the_ca_file_and_fails_without_it(s3: S3Server) -> None:
    assert s3.url.startswith("https://127.0.0.1:")
    assert s3.ca_file is not None
    s3.client(verify=str(s3.ca_file)).list_buckets()
    with pytest.raises(SSLError):
        s3.client(verify=True).list_buckets()  # the system trust store has never seen our CA
    context = ssl.create_default_context(cafile=s3.ca_file)
    for host in ("127.0.0.1", "localhost"):
        # The certificate names both the IP and the DNS name the clients use.
        with (
            socket.create_connection(("127.0.0.1", s3.port), timeout=5) as sock,
            context.wrap_socket(sock, server_hostname=host) as tls,
        ):
            assert tls.version() in {"TLSv1.2", "TLSv1.3"}


def test_stop_then_start_keeps_the_objects(tmp_path: Path) -> None:
    with s3_server(tmp_path, tls=False) as s3:
        assert s3.url.startswith("http://")
        s3.create_bucket("durable")
        s3.put("durable", "a/1", b"one")
        s3.put("durable", "a/2", b"two" * 100_000)
        s3.stop()
        assert not s3.running()
        with pytest.raises(EndpointConnectionError):
            s3.client().list_buckets()
        s3.start()
        assert s3.list_keys("durable") == ["a/1", "a/2"]
        assert s3.get("durable", "a/1") == b"one"
        assert s3.get("durable", "a/2") == b"two" * 100_000
