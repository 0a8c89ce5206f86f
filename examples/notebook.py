"""CodeBox keeps state between runs, like a notebook; stream output as it comes.

    python3 examples/notebook.py
"""
import asyncio
import boxlite


async def main():
    async with boxlite.CodeBox(memory_mb=256) as box:
        await box.run("import math\nradius = 2")
        r = await box.run("area = math.pi * radius ** 2\nround(area, 3)")
        print("area:", r.stdout.strip())
        r = await box.run("import time\nfor i in range(3):\n    print('tick', i, flush=True)\n    time.sleep(0.2)",
                          on_stdout=lambda text: print("streamed:", text, end=""))
        try:
            await box.run("while True: pass", timeout=2)
        except boxlite.TimeoutError:
            print("timed out; state kept:", (await box.run("radius")).stdout.strip())
        await box.restart()
        print("after restart:", (await box.run("'radius' in dir()")).stdout.strip())


if __name__ == "__main__":
    asyncio.run(main())
