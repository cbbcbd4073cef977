"""`python -m jaxconv.demo`: the demo after a plain `pip install "jaxconv[demo]"`."""

from jaxconv.demo.cli import main

if __name__ == "__main__":
    main(prog="python -m jaxconv.demo")
