"""Images and documents: send a picture and a PDF to both endpoint kinds.

Runs offline: a tiny PNG and a minimal PDF are made in memory and the
simulator stands in for the real servers (it counts the image in the input
tokens, by each provider's rule):

    python examples/vision.py
"""

import struct
import zlib

from llm_sync import DocumentBlock, ImageBlock, LLMManager, Message, MessageRole, TextBlock
from llm_sync.testing import Simulator


def tiny_png(width: int = 64, height: int = 48) -> bytes:
    """A grey PNG of ``width`` × ``height`` pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    pixels = b"".join(b"\x00" + b"\x80" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels))
            + chunk(b"IEND", b""))


MINIMAL_PDF = b"%PDF-1.4\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n"


def main() -> None:
    image = ImageBlock.from_bytes(tiny_png())  # media type and size read from the bytes
    document = DocumentBlock.from_bytes(MINIMAL_PDF, title="report.pdf")
    with Simulator(keys=("sk-sim-1",)) as sim:
        config = {"providers": {
            "anthropic": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["claude-sim-1"]},
            "openai": {"api_keys": ["sk-sim-1"], "base_url": sim.base_url, "models": ["gpt-sim-1"]},
        }}
        with LLMManager.from_dict(config) as manager:
            for endpoint in ("anthropic", "openai"):
                client = manager.get_client(endpoint)
                message = Message(MessageRole.USER, [TextBlock("What is in this picture?"), image])
                response = client.complete([message])
                print(f"[{endpoint}] {response.content} ({response.usage.input_tokens} input tokens)")
                pdf_question = Message(MessageRole.USER, [document, TextBlock("Summarise the report.")])
                print(f"[{endpoint}] {client.complete([pdf_question]).content}")


if __name__ == "__main__":
    main()
