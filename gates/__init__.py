"""The extra gated stages in front of the face models: a day/night classifier and a
trigger-word detector, behind one small interface (gates/gate.py).

`gates` never imports `service`, `encoder` or `index`."""
