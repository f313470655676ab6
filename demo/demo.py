"""The refwatch demo: uses the `shapes` extension for a couple of seconds."""
import time

import shapes

kept = []
for round in range(4):
    points = shapes.grid(20000)
    print(f"round {round}: sum of x = {shapes.sum_x(points)}, caption of {shapes.caption_length(points)} chars")
    shapes.retain(points[0])  # a reference taken and never given back
    kept.append(points[0])
    time.sleep(0.6)
