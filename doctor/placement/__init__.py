"""Where the model's weights live: accelerate's device map and offloading (`flags`), layers brought onto the
execution device one at a time (`offload`), the memory an examination needs (`estimate`), and out-of-memory
errors named by device and stage (`oom`)."""
