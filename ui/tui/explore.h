/* The explorer's entry point, for the subcommand table in ui/main.c. */
#ifndef MOE_TUI_EXPLORE_H
#define MOE_TUI_EXPLORE_H

/* moescope [explore] [MODEL] [options]: returns the exit status. */
int cmd_explore(int argc, char **argv);
/* moescope view FILE [--replay [MODEL]]: a transcript in review mode. */
int cmd_view(int argc, char **argv);

#endif
