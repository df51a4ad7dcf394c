"""`python -m keras_ft <command>`."""

from keras_ft.cli import main

if __name__ == "__main__":
    main()
