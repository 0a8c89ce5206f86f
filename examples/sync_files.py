"""The synchronous API, files in and out, and a busybox box.

    python3 examples/sync_files.py
"""
import os
import tempfile

from boxlite.sync import CodeBox, SimpleBox


def main():
    with SimpleBox(image="busybox", memory_mb=128) as box:
        print(box.exec("sh", "-c", "echo hello from $(uname -s) in box $(hostname)").stdout, end="")

    with CodeBox(memory_mb=256) as box, tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, "data.csv"), "w") as f:
            f.write("a,b\n1,2\n3,4\n")
        box.copy_in(os.path.join(d, "data.csv"), "/home/sandbox/data.csv")
        r = box.run("import csv\nrows = list(csv.DictReader(open('/home/sandbox/data.csv')))\n"
                    "total = sum(int(r['a']) + int(r['b']) for r in rows)\n"
                    "open('/home/sandbox/total.txt', 'w').write(str(total))\ntotal")
        print("total:", r.stdout.strip())
        box.copy_out("/home/sandbox/total.txt", os.path.join(d, "total.txt"))
        print("copied out:", open(os.path.join(d, "total.txt")).read())


if __name__ == "__main__":
    main()
