/* The one module that owns the terminal: curses start-up and teardown,
 * the colour pairs (256 colours, 8 colours, or none under NO_COLOR, where
 * experts are told apart by attributes and letters), and restoring the
 * terminal whatever way the program ends: quit, SIGINT/SIGTERM/SIGHUP
 * (which ask the loop to quit) or a crash signal (which restores it and
 * dies by the same signal). */
#ifndef MOE_TUI_TERM_H
#define MOE_TUI_TERM_H

#include <signal.h>

/* Colour pairs other than the experts'. */
enum { CP_TITLE = 1, CP_DIM, CP_ERR, CP_OK, CP_SEL, CP_BAR, CP_EXPERT0 };

/* 0, or -1 if the terminal cannot be used (message printed). */
int term_init(void);
void term_done(void);
/* 1 when experts are told apart without colour. */
int term_nocolour(void);
/* "256", "8" or "none". */
const char *term_colour_mode(void);
/* The attributes that mark expert e (colour pair, or attributes without
 * colour). */
int term_expert_attr(int e);
/* The letter that names expert e without colour: A..Z then a..z. */
char term_expert_letter(int e);
/* Clicks and the wheel reach the program as KEY_MOUSE (on), or the
 * terminal keeps them for selecting text (off). */
void term_mouse(int on);
/* A signal asked the program to quit (SIGINT/SIGTERM/SIGHUP). */
extern volatile sig_atomic_t term_quit_signal;
/* Written on a quit signal, to wake the loop's poll(); set by the caller. */
extern int term_wake_fd;

#define TERM_MIN_W 80
#define TERM_MIN_H 22

#endif
