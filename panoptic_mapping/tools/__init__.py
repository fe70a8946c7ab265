"""Programs built on the whole package: the demo, its service client, the replay of
recorded scenes and bags into the node, and micro-benchmarks of the front-ends."""
