"""The few S3 XML documents @uppy/aws-s3 6.x reads when its `signRequest` points a request at
this API instead of at S3 (create, list, complete, abort of a multipart upload), and the one it
sends (CompleteMultipartUpload). Shapes as in the S3 API reference; parsing with defusedxml
(the body comes from the client)."""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree.ElementTree import Element, SubElement, tostring

from defusedxml import ElementTree as SafeET
from django.http import HttpResponse

from backend.core.errors import ValidationFailed
from backend.storage.base import CompletedPart, UploadedPart

S3_NS = "http://s3.amazonaws.com/doc/2006-03-01/"
MAX_BODY = 1024 * 1024  # 10 000 parts of ~100 bytes each


def _document(tag: str, children: Iterable[tuple[str, str]]) -> Element:
    root = Element(tag, xmlns=S3_NS)
    for name, value in children:
        SubElement(root, name).text = value
    return root


def xml_response(root: Element | None, status: int = 200) -> HttpResponse:
    body = b"" if root is None else tostring(root, encoding="utf-8", xml_declaration=True)
    return HttpResponse(body, status=status, content_type="application/xml")


def initiate_result(*, bucket: str, key: str, upload_id: str) -> HttpResponse:
    return xml_response(
        _document(
            "InitiateMultipartUploadResult",
            [("Bucket", bucket), ("Key", key), ("UploadId", upload_id)],
        )
    )


def list_parts_result(*, key: str, upload_id: str, parts: Iterable[UploadedPart]) -> HttpResponse:
    root = _document("ListPartsResult", [("Key", key), ("UploadId", upload_id)])
    for part in parts:
        node = SubElement(root, "Part")
        SubElement(node, "PartNumber").text = str(part.part_number)
        # Unquoted: Uppy's parser strips only the &quot; entity S3 itself writes.
        SubElement(node, "ETag").text = part.etag.strip('"')
        SubElement(node, "Size").text = str(part.size)
    return xml_response(root)


def complete_result(*, location: str, bucket: str, key: str, etag: str) -> HttpResponse:
    return xml_response(
        _document(
            "CompleteMultipartUploadResult",
            [("Location", location), ("Bucket", bucket), ("Key", key), ("ETag", etag.strip('"'))],
        )
    )


def error_response(*, status: int, code: str, message: str) -> HttpResponse:
    """S3's error document; Uppy reports `S3 returned <status> - <Code>`."""
    response = xml_response(_document("Error", [("Code", code), ("Message", message)]), status)
    response["x-amz-error-code"] = code
    return response


def parse_complete(body: bytes) -> list[CompletedPart]:
    """The parts of a `<CompleteMultipartUpload>` body, as S3 reads them."""
    if len(body) > MAX_BODY:
        raise ValidationFailed(
            "The CompleteMultipartUpload body is too large.", code="invalid_part"
        )
    try:
        root = SafeET.fromstring(body)
    except Exception:  # defusedxml's and expat's errors alike: the body is not a document
        raise ValidationFailed(
            "The body must be an S3 CompleteMultipartUpload XML document.", code="invalid_part"
        ) from None
    parts: list[CompletedPart] = []
    for node in root.iter():
        if node.tag.rsplit("}", 1)[-1] != "Part":
            continue
        fields = {child.tag.rsplit("}", 1)[-1]: (child.text or "").strip() for child in node}
        number, etag = fields.get("PartNumber", ""), fields.get("ETag", "")
        if not number.isdigit() or not etag:
            raise ValidationFailed(
                "Every Part needs a PartNumber and an ETag.", code="invalid_part"
            )
        parts.append(CompletedPart(int(number), etag))
    if not parts:
        raise ValidationFailed("List at least one Part.", code="invalid_part")
    return parts
