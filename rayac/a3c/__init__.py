"""A3C: workers pull weights, compute a gradient on their own rollout and push it to the parameter-server shards.

Read in this order:

- ``driver``: the algorithm (``A3C``): starts the shards and the workers, collects their statistics, checkpoints;
- ``worker``: one worker's loop: pull → rollout → n-step targets → gradient → push;
- ``server``: one parameter-server shard: the optimiser over its slice of the flat parameters;
- ``client``: a worker's view of the K shards (pull all slices, push all slices);
- ``messages``: the typed messages between workers, shards and the driver;
- ``store``: a shard's checkpoints (in memory and on disk);
- ``flat``: the flat parameter layout the shards slice.
"""
