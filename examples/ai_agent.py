"""The SDK example of the README: run model-written code three ways.

    python3 examples/ai_agent.py
"""
import asyncio
import boxlite

async def run_ai_code(code: str) -> str:
    async with boxlite.CodeBox() as box:
        result = await box.run(code)
        return result.stdout

async def limited(code: str):
    async with boxlite.SimpleBox(image="python:slim", memory_mb=512, cpus=1, timeout_seconds=30) as box:
        return await box.exec("python", "-c", code)

async def guarded(untrusted_code: str) -> str:
    try:
        async with boxlite.CodeBox() as box:
            result = await box.run(untrusted_code)
            if result.exit_code != 0:
                return "Code failed: " + result.stderr
            return result.stdout
    except boxlite.TimeoutError:
        return "Execution timed out"
    except boxlite.ResourceError:
        return "Resource limit exceeded"


async def main():
    print(await run_ai_code("print(sum(range(10)))"), end="")
    print((await limited("import platform; print(platform.python_version())")).stdout, end="")
    print(await guarded("import json; print(json.dumps({'ok': True}))"), end="")
    print(await guarded("undefined_name"))


if __name__ == "__main__":
    asyncio.run(main())
