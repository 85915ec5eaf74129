"""The processing pipeline: one module per stage, `runner` holds their order.

    fetch → audio → vad → diarize → transcribe → prosody → assemble (+ emotion) → formats

Stages are pure functions handed their models (see `voxtrace.models`); importing this
package loads no model and imports no ML library.
"""

__all__: list[str] = []
