"""Lints a chart with the real Helm library (helm-sdkpy, Helm v4) and prints
the result as JSON: {"errors": N, "messages": [...]}. Exit 0 either way;
the caller judges."""
import asyncio
import json
import sys

import helm_sdkpy

result = asyncio.run(helm_sdkpy.Lint(helm_sdkpy.Configuration()).run(sys.argv[1]))
errors = result.get("Errors") or []
print(json.dumps({"errors": len(errors), "messages": result.get("Messages") or []}))
