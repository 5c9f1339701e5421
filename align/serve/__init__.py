"""`align serve`: a policy (OpenAI-compatible), a reward model (OpenRLHF's remote-RM shape) and a domain reward
over HTTP. `server` (Config, run and the route table), `app` (routes, limits, errors), `backends` (the loaded
models), `schemas` (request bodies), `launch` (start a server in a subprocess, e.g. for tests or a judge)."""
