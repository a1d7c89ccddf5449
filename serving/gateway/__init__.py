"""The serving gateway: stage URLs, OIP v1/v2 and OpenAI routes, balancing over ready pods."""
