/* The subcommands of the moescope command-line front end. Each takes the
 * arguments after its name and returns the process exit status. */
#ifndef MOE_CLI_H
#define MOE_CLI_H

int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_analyze(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_export(int argc, char **argv);
int cmd_replay(int argc, char **argv);

/* Make OpenBLAS use the fastest kernel this CPU supports (see blas_env.c).
 * May re-execute the program; returns if it does not. */
void blas_env_select(char **argv);

#endif
